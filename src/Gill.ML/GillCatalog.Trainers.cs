using Gill.ML.Stages;
using Gill.ML.Stages.CaptionMapping;
using Gill.ML.Stages.Decision;
using Gill.ML.Stages.GenerationTargets;
using Gill.ML.Stages.GillMapper;
using Gill.ML.Stages.ImgTokens;
using Gill.ML.Stages.Joint;
using Gill.ML.Stages.Retrieval;
using Microsoft.ML;

namespace Gill.ML;

public sealed partial class GillCatalog
{
    /// <summary>GILL's trainers: <c>mlContext.Gill().Trainers.Gill(...)</c> (joint) and the per-stage trainers.</summary>
    public GillTrainersCatalog Trainers => new(Context);

    /// <summary>
    /// Computes generation targets: each caption through the text-to-image model's frozen CLIP text encoder
    /// ([L, m] hidden states), optionally cached on disk.
    /// </summary>
    /// <param name="textEncoderFolder">Hugging Face folder of the CLIP text encoder.</param>
    /// <param name="outputColumnName">Output column.</param>
    /// <param name="inputColumnName">Caption column.</param>
    /// <param name="tokenizerFolder">CLIP tokenizer folder (null: the encoder folder).</param>
    /// <param name="sequenceLength">L (null: the encoder's maximum, 77 for Stable Diffusion).</param>
    /// <param name="cacheFolder">On-disk cache (null: none).</param>
    public GenerationTargetEstimator ComputeGenerationTargets(string textEncoderFolder, string outputColumnName = GillColumnNames.GenerationTarget,
        string inputColumnName = GillColumnNames.Caption, string? tokenizerFolder = null, int? sequenceLength = null, string? cacheFolder = null) =>
        new(Context, new GenerationTargetEstimator.Options
        {
            TextEncoderFolder = textEncoderFolder,
            OutputColumnName = outputColumnName,
            InputColumnName = inputColumnName,
            TokenizerFolder = tokenizerFolder,
            SequenceLength = sequenceLength,
            CacheFolder = cacheFolder,
        });

    /// <summary>Computes generation targets with the given options.</summary>
    public GenerationTargetEstimator ComputeGenerationTargets(GenerationTargetEstimator.Options options) => new(Context, options);
}

/// <summary>GILL's trainers on an <see cref="MLContext"/>: <c>mlContext.Gill().Trainers</c>.</summary>
public sealed class GillTrainersCatalog
{
    private readonly MLContext _context;

    internal GillTrainersCatalog(MLContext context) => _context = context;

    /// <summary>
    /// GILL's joint multitask trainer (captioning, [IMG] production, contrastive retrieval and generation distillation
    /// in every step; the paper's recipe). Fitting returns one <see cref="GillTransformer"/>.
    /// </summary>
    public GillJointTrainer Gill(GillJointTrainer.Options options) => new(_context, options);

    /// <summary>GILL's joint trainer with the common settings; everything else keeps its default.</summary>
    /// <param name="backbone">The frozen language model and tokenizer.</param>
    /// <param name="architecture">GILL sizes (null: the released architecture).</param>
    /// <param name="featuresColumnName">Visual feature column.</param>
    /// <param name="captionColumnName">Caption column.</param>
    /// <param name="targetColumnName">Generation target column.</param>
    /// <param name="batchSize">Rows per step.</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="learningRate">Peak learning rate.</param>
    /// <param name="maxSequenceLength">Maximum token sequence length.</param>
    /// <param name="seed">Seed (null: from the MLContext).</param>
    public GillJointTrainer Gill(GillLanguageBackbone backbone, GillConfig? architecture = null, string featuresColumnName = GillColumnNames.ClipPooledFeatures,
        string captionColumnName = GillColumnNames.Caption, string targetColumnName = GillColumnNames.GenerationTarget, int batchSize = 16, int epochs = 1,
        double learningRate = 1e-3, int maxSequenceLength = 32, int? seed = null) =>
        new(_context, new GillJointTrainer.Options
        {
            Backbone = backbone,
            Architecture = architecture,
            FeaturesColumnName = featuresColumnName,
            CaptionColumnName = captionColumnName,
            TargetColumnName = targetColumnName,
            BatchSize = batchSize,
            Epochs = epochs,
            MaxSequenceLength = maxSequenceLength,
            Seed = seed,
            Training = new Training.GillTrainingOptions { LearningRate = learningRate },
        });

    /// <summary>Trains W_cap (features → visual tokens) with the captioning loss, everything else frozen.</summary>
    public CaptionMappingTrainer CaptionMapping(CaptionMappingTrainer.Options options) => new(_context, options);

    /// <summary>Trains W_cap with the common settings.</summary>
    public CaptionMappingTrainer CaptionMapping(GillLanguageBackbone backbone, string outputColumnName = GillColumnNames.VisualTokens,
        string featuresColumnName = GillColumnNames.ClipPooledFeatures, string captionColumnName = GillColumnNames.Caption, GillConfig? architecture = null,
        int batchSize = 16, int epochs = 1, double learningRate = 1e-3, int? seed = null) =>
        new(_context, new CaptionMappingTrainer.Options
        {
            Backbone = backbone, OutputColumnName = outputColumnName, FeaturesColumnName = featuresColumnName, CaptionColumnName = captionColumnName,
            Architecture = architecture, BatchSize = batchSize, Epochs = epochs, LearningRate = learningRate, Seed = seed,
        });

    /// <summary>Learns the [IMG] token embeddings with the [IMG]-production loss, everything else frozen.</summary>
    public ImgTokenTrainer ImgTokens(ImgTokenTrainer.Options options) => new(_context, options);

    /// <summary>Learns the [IMG] token embeddings, starting from a fitted stage.</summary>
    public ImgTokenTrainer ImgTokens(GillStageTransformerBase startFrom, string outputColumnName = GillColumnNames.ImgHiddenStates,
        string captionColumnName = GillColumnNames.Caption, int batchSize = 16, int epochs = 1, double learningRate = 1e-3, int? seed = null) =>
        new(_context, new ImgTokenTrainer.Options
        {
            StartFrom = startFrom, OutputColumnName = outputColumnName, CaptionColumnName = captionColumnName,
            BatchSize = batchSize, Epochs = epochs, LearningRate = learningRate, Seed = seed,
        });

    /// <summary>Distils the generation mapper against generation targets, everything else frozen.</summary>
    public GillMapperTrainer GillMapper(GillMapperTrainer.Options options) => new(_context, options);

    /// <summary>Distils the generation mapper, starting from the fitted [IMG] token stage.</summary>
    public GillMapperTrainer GillMapper(GillStageTransformerBase startFrom, string outputColumnName = GillColumnNames.GenerationEmbedding,
        string imgHiddenStatesColumnName = GillColumnNames.ImgHiddenStates, string targetColumnName = GillColumnNames.GenerationTarget,
        int batchSize = 16, int epochs = 1, double learningRate = 1e-3, int? seed = null) =>
        new(_context, new GillMapperTrainer.Options
        {
            StartFrom = startFrom, OutputColumnName = outputColumnName, ImgHiddenStatesColumnName = imgHiddenStatesColumnName, TargetColumnName = targetColumnName,
            BatchSize = batchSize, Epochs = epochs, LearningRate = learningRate, Seed = seed,
        });

    /// <summary>Trains the retrieval projections and temperature with InfoNCE, everything else frozen.</summary>
    public RetrievalProjectionTrainer RetrievalProjection(RetrievalProjectionTrainer.Options options) => new(_context, options);

    /// <summary>Trains the retrieval projections, starting from a fitted stage.</summary>
    public RetrievalProjectionTrainer RetrievalProjection(GillStageTransformerBase startFrom, string imgHiddenStatesColumnName = GillColumnNames.ImgHiddenStates,
        string featuresColumnName = GillColumnNames.ClipPooledFeatures, int batchSize = 16, int epochs = 1, double learningRate = 1e-3, int? seed = null) =>
        new(_context, new RetrievalProjectionTrainer.Options
        {
            StartFrom = startFrom, ImgHiddenStatesColumnName = imgHiddenStatesColumnName, FeaturesColumnName = featuresColumnName,
            BatchSize = batchSize, Epochs = epochs, LearningRate = learningRate, Seed = seed,
        });

    /// <summary>Trains the retrieve-or-generate classifier on labelled [IMG] hidden states.</summary>
    public DecisionClassifierTrainer DecisionClassifier(DecisionClassifierTrainer.Options options) => new(_context, options);

    /// <summary>Trains the retrieve-or-generate classifier (label column: true = retrieve).</summary>
    public DecisionClassifierTrainer DecisionClassifier(GillStageTransformerBase startFrom, string labelColumnName = GillColumnNames.Label,
        string imgHiddenStatesColumnName = GillColumnNames.ImgHiddenStates, int steps = 2000, double learningRate = 1e-3, int? seed = null) =>
        new(_context, new DecisionClassifierTrainer.Options
        {
            StartFrom = startFrom, LabelColumnName = labelColumnName, ImgHiddenStatesColumnName = imgHiddenStatesColumnName,
            Steps = steps, LearningRate = learningRate, Seed = seed,
        });
}
