using Gill.ML.Generation;
using Gill.ML.Inference;
using Gill.ML.Stages;
using Gill.ML.Stages.Joint;
using Gill.ML.Stages.VisualFeatures;
using Gill.ML.Training;
using Gill.ML.World;
using Gill.ML.WorldModels;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation.Demo;

/// <summary>One GILL training on the shapes world: schedule, architecture variant and which parts learn.</summary>
internal sealed record WorldGillSettings
{
    public int Steps { get; init; } = 300;
    public int BatchSize { get; init; } = 16;
    public double LearningRate { get; init; } = 2e-3;
    public int ImageTokens { get; init; } = 4;
    public int VisualTokens { get; init; } = 2;
    public int Seed { get; init; }
    public GillMapperKind Mapper { get; init; } = GillMapperKind.GillMapper;
    /// <summary>0 trains retrieval and captioning only (FROMAGe's objective).</summary>
    public double GenerationLossWeight { get; init; } = 1.0;
    public bool TrainLanguageModel { get; init; }
    public double LanguageModelLearningRate { get; init; } = 1e-4;
    /// <summary>Epochs of mapper-only distillation after the joint steps (0: none; ignored without the generation loss).</summary>
    public int MapperDistillationEpochs { get; init; }

    public static WorldGillSettings From(DemoOptions o) => new()
    {
        Steps = o.Steps, BatchSize = o.BatchSize, LearningRate = o.LearningRate, ImageTokens = o.ImageTokens, VisualTokens = o.VisualTokens, Seed = o.Seed,
        MapperDistillationEpochs = o.MapperDistillationEpochs,
    };
}

/// <summary>
/// The pieces the demo and the paper experiments share: GILL's joint training on world captions through the ML.NET
/// stages (ExtractVisualFeatures → ComputeGenerationTargets → Trainers.Gill), prompts, forced-[IMG] generation options
/// and the world image tower as image embedder.
/// </summary>
internal static class WorldGillTraining
{
    /// <summary>Factor on the [IMG0] logit that forces an image at the first step (the original evaluations' setting).</summary>
    public const double ForcedImageScaleFactor = 1e4;

    /// <summary>GILL's architecture for the world backbones: mapper width = LM width, one encoder and one decoder layer.</summary>
    public static GillConfig Architecture(GillLanguageBackbone backbone, IVisualEncoder encoder, ConditioningShape cond, WorldGillSettings s)
    {
        int hidden = backbone.EmbeddingSize;
        int heads = hidden % 4 == 0 ? 4 : hidden % 2 == 0 ? 2 : 1;
        return new GillConfig
        {
            NVisualTokens = s.VisualTokens, NumTokens = s.ImageTokens, VisualHiddenSize = encoder.FeatureSize,
            RetEmbDim = Math.Min(256, hidden), MapperHiddenDim = hidden, MapperNumHeads = heads,
            MapperNumEncoderLayers = 1, MapperNumDecoderLayers = 1, TextFcMode = s.Mapper,
            NumClipTokens = cond.SequenceLength, GenEmbDim = cond.EmbeddingDim,
        };
    }

    /// <summary>
    /// Fits the pipeline on <paramref name="trainRows"/> (the first Steps × BatchSize rows at most). The caller owns
    /// the returned chain (dispose its transformers). <paramref name="targetsCache"/> caches the generation targets.
    /// </summary>
    public static TransformerChain<GillTransformer> Train(MLContext ml, GillLanguageBackbone backbone, IVisualEncoder encoder, ConditioningShape cond,
        string clipTextFolder, IReadOnlyList<ShapesImageExample> trainRows, WorldGillSettings s, string? targetsCache,
        IProgress<GillTrainingProgress>? progress, CancellationToken ct)
    {
        if (trainRows.Count < s.BatchSize) throw new InvalidOperationException($"The world has {trainRows.Count} training images, fewer than BatchSize {s.BatchSize}.");
        int rows = Math.Min(trainRows.Count, s.Steps * s.BatchSize);
        var used = trainRows.Take(rows).ToList();
        IDataView trainData = Frame(used.Select(x => x.ImagePath), used.Select(x => x.Caption));
        var pipeline = ml.Gill().ExtractVisualFeatures(GillColumnNames.ClipPooledFeatures, GillColumnNames.ImagePath, encoder)
            .Append(ml.Gill().ComputeGenerationTargets(clipTextFolder, sequenceLength: cond.SequenceLength, cacheFolder: targetsCache))
            .Append(Trainer(ml, backbone, encoder, cond, rows, s, progress, ct));
        return pipeline.Fit(trainData);
    }

    /// <summary>
    /// The first two stages of the raw-rows Train overload (visual features, generation targets) fitted on the training rows and
    /// their output cached in memory, so that several GILL trainings on the same rows share one feature pass.
    /// </summary>
    public sealed record Prepared(ITransformer Prefix, IDataView Data, int Rows);

    /// <summary>Fits and runs the feature and target stages on the first <paramref name="rows"/> training rows, caching the result.</summary>
    public static Prepared Prepare(MLContext ml, IVisualEncoder encoder, ConditioningShape cond, string clipTextFolder,
        IReadOnlyList<ShapesImageExample> trainRows, int rows, string? targetsCache)
    {
        var used = trainRows.Take(rows).ToList();
        IDataView raw = Frame(used.Select(x => x.ImagePath), used.Select(x => x.Caption));
        var prefix = ml.Gill().ExtractVisualFeatures(GillColumnNames.ClipPooledFeatures, GillColumnNames.ImagePath, encoder)
            .Append(ml.Gill().ComputeGenerationTargets(clipTextFolder, sequenceLength: cond.SequenceLength, cacheFolder: targetsCache))
            .Fit(raw);
        var cached = ml.Data.Cache(prefix.Transform(raw));
        // Fill the cache now, so that concurrent trainings only read it.
        using (var cursor = cached.GetRowCursor(cached.Schema))
            while (cursor.MoveNext()) { }
        return new Prepared(prefix, cached, used.Count);
    }

    /// <summary>
    /// Trains GILL on <paramref name="prepared"/> rows exactly as the raw-rows Train overload does on the raw rows; the returned
    /// chain is the shared prefix followed by the new GILL stage (dispose only its last transformer).
    /// </summary>
    public static TransformerChain<GillTransformer> Train(MLContext ml, GillLanguageBackbone backbone, IVisualEncoder encoder, ConditioningShape cond,
        Prepared prepared, WorldGillSettings s, IProgress<GillTrainingProgress>? progress, CancellationToken ct)
    {
        if (prepared.Rows < s.BatchSize) throw new InvalidOperationException($"The world has {prepared.Rows} training images, fewer than BatchSize {s.BatchSize}.");
        int rows = Math.Min(prepared.Rows, s.Steps * s.BatchSize);
        var data = rows == prepared.Rows ? prepared.Data : ml.Data.TakeRows(prepared.Data, rows);
        var gill = Trainer(ml, backbone, encoder, cond, rows, s, progress, ct).Fit(data);
        var parts = (prepared.Prefix is IEnumerable<ITransformer> chain ? chain.ToArray() : new[] { prepared.Prefix }).Append(gill).ToArray();
        return new TransformerChain<GillTransformer>(parts);
    }

    private static GillJointTrainer Trainer(MLContext ml, GillLanguageBackbone backbone, IVisualEncoder encoder, ConditioningShape cond, int rows,
        WorldGillSettings s, IProgress<GillTrainingProgress>? progress, CancellationToken ct) =>
        ml.Gill().Trainers.Gill(new GillJointTrainer.Options
        {
            Backbone = backbone,
            Architecture = Architecture(backbone, encoder, cond, s),
            MaxSequenceLength = Math.Min(40, backbone.LanguageModel.Info.MaxPositions),
            BatchSize = s.BatchSize,
            Epochs = (int)Math.Ceiling(s.Steps * (double)s.BatchSize / rows),
            MaxSteps = s.Steps,
            Seed = s.Seed,
            LogEveryNSteps = Math.Max(1, s.Steps / 10),
            MapperDistillation = s.MapperDistillationEpochs > 0 && s.GenerationLossWeight > 0 ? new GillMapperDistillationOptions { Epochs = s.MapperDistillationEpochs } : null,
            Progress = progress,
            CancellationToken = ct,
            Training = new GillTrainingOptions
            {
                LearningRate = s.LearningRate, WarmupSteps = Math.Max(1, s.Steps / 20), TotalSteps = s.Steps,
                LrStepSize = Math.Max(1, s.Steps * 3 / 4), LrGamma = 0.3, Seed = s.Seed, CheckpointDirectory = null,
                GenerationLossWeight = s.GenerationLossWeight,
                TrainLanguageModel = s.TrainLanguageModel, LanguageModelLearningRate = s.LanguageModelLearningRate,
            },
        });

    /// <summary>Generation options that force one [IMG] group at the first step and decide with <paramref name="mode"/>.</summary>
    public static GillGenerationOptions Forced(GillDecisionMode mode, int maxNewTokens = 8) => new()
    {
        MaxNewTokens = maxNewTokens, ImageTokenScaleFactor = ForcedImageScaleFactor, MaxImages = 1, DecisionMode = mode,
        ContextOverflow = GillContextOverflow.TruncateLeft, Seed = 1337,
    };

    /// <summary>An interleaved prompt: each text followed by its image when it has one.</summary>
    public static GillPrompt ToPrompt(IReadOnlyList<(string Text, string? ImagePath)> inputs)
    {
        var parts = new List<GillPromptPart>();
        foreach (var (text, image) in inputs)
        {
            parts.Add(new GillTextInput(text + " "));
            if (image is not null) parts.Add(GillImageInput.FromFile(image));
        }
        return new GillPrompt(parts);
    }

    /// <summary>A data frame of image paths and captions in GILL's column names.</summary>
    public static DataFrame Frame(IEnumerable<string> paths, IEnumerable<string> captions) => new(
        new StringDataFrameColumn(GillColumnNames.ImagePath, paths),
        new StringDataFrameColumn(GillColumnNames.Caption, captions));

    /// <summary>Float vectors of a column.</summary>
    public static List<float[]> Column(IDataView data, string name) =>
        data.GetColumn<VBuffer<float>>(name).Select(v => v.DenseValues().ToArray()).ToList();

    /// <summary>The world image tower's projected embedding of RGB images [3,H,W] in [0,1] (resized to the tower's size).</summary>
    public static Tensor EmbedImages(WorldVisualEncoder encoder, IReadOnlyList<Tensor> images)
    {
        using var scope = torch.NewDisposeScope();
        var batch = Resize(torch.stack(images.Select(i => i.to(ScalarType.Float32).cpu()).ToArray()), encoder.ImageSize);
        var (_, embeddings) = encoder.Encode(batch);
        return embeddings.MoveToOuterDisposeScope();
    }

    /// <summary>Bilinear resize of [N,3,H,W] to size × size (unchanged when already that size).</summary>
    public static Tensor Resize(Tensor images, int size) =>
        images.shape[2] == size && images.shape[3] == size ? images
            : nn.functional.interpolate(images, [size, size], mode: InterpolationMode.Bilinear, align_corners: false).clamp(0, 1);

    /// <summary>The image GILL generates for <paramref name="prompt"/> with [IMG] forced (a detached copy the caller disposes).</summary>
    public static Tensor GenerateOne(GillModel gill, GillPrompt prompt, string what, CancellationToken ct)
    {
        using var r = gill.Generate(prompt, Forced(GillDecisionMode.AlwaysGenerate), ct);
        var image = r.Parts.OfType<GillGeneratedImageOutput>().FirstOrDefault()
            ?? throw new InvalidOperationException($"GILL produced no image for {what} although [IMG] was forced (scale factor {ForcedImageScaleFactor}).");
        return image.Image.detach().clone();
    }
}
