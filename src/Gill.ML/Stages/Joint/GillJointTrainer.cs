using System.Text.Json.Serialization;
using Gill.ML.MLNet;
using Gill.ML.Persistence;
using Gill.ML.Stages.CaptionMapping;
using Gill.ML.Stages.GillMapper;
using Gill.ML.Stages.ImgTokens;
using Gill.ML.Stages.Retrieval;
using Gill.ML.Stages.VisualFeatures;
using Gill.ML.Training;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Stages.Joint;

/// <summary>
/// GILL's paper-faithful multitask training (spec §2–§3): every optimizer step runs the three LM passes (captioning with
/// the visual prefix, the text-only retrieval and generation passes) and sums the captioning, [IMG]-production,
/// contrastive and generation-distillation losses, training W_cap, E_img, W_t2i, W_i2t, τ and the GILLMapper together
/// while the language model stays frozen. Rows are read in a shuffled order seeded per epoch.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// | Column | Direction | Type |
/// |---|---|---|
/// | `FeaturesColumnName` (default `ClipPooledFeatures`), or `ImageColumnName` (default `Image`) when `VisualEncoder` is set | in | `Vector<Single, Dv>`; image: `MLImage` or `String` path |
/// | `CaptionColumnName` (default `Caption`) | in | `String` |
/// | `TargetColumnName` (default `GenerationTarget`) | in (training only; not needed when `GenerationLossWeight` is 0) | `Vector<Single, L, m>` |
/// | `VisualTokens` | out | `Vector<Single, k, D>` |
/// | `ImgHiddenStates` | out | `Vector<Single, r, D>` |
/// | `GenerationEmbedding` | out | `Vector<Single, L, m>` |
/// | `TextRetrievalEmbedding`, `ImageRetrievalEmbedding` | out | `Vector<Single, p>` (L2-normalised) |
///
/// | Characteristic | Value |
/// |---|---|
/// | Optimizer | AdamW (0.9, 0.95), warm-up then StepLR, global-norm clipping, gradient accumulation (see `Training`) |
/// | Checkpoints | every `Training.CheckpointEvery` steps into `Training.CheckpointDirectory`; `Training.Resume` continues from the newest |
/// | Progress | `Progress` (`IProgress<GillTrainingProgress>`) each step, ML.NET channel messages every `LogEveryNSteps` |
/// | Persistence | `mlContext.Gill().Model.Save` / `Load` |
///
/// The per-stage trainers (`CaptionMapping`, `ImgTokens`, `GillMapper`, `RetrievalProjection`) train one part at a time
/// with the others frozen; that staged chain only approximates this joint objective (E_img, for example, receives
/// gradients from all losses here but only from the [IMG]-production loss in its own stage).
/// ]]></format>
/// </remarks>
public sealed class GillJointTrainer : GillEstimatorBase<GillTransformer>
{
    internal const string Stage = "Gill";

    /// <summary>Options of the joint trainer.</summary>
    public sealed class Options
    {
        /// <summary>The frozen LM and tokenizer. Required; the caller keeps ownership.</summary>
        public GillLanguageBackbone? Backbone { get; set; }

        /// <summary>GILL architecture (k, p, mapper, L × m, Dv); default <see cref="GillConfig.Default"/>. [IMG] ids, BOS and pad come from the backbone.</summary>
        public GillConfig? Architecture { get; set; }

        /// <summary>Optional frozen visual encoder: when set, the model reads images from <see cref="ImageColumnName"/> instead of features.</summary>
        public IVisualEncoder? VisualEncoder { get; set; }

        /// <summary>Image column (with <see cref="VisualEncoder"/>).</summary>
        public string ImageColumnName { get; set; } = GillColumnNames.Image;

        /// <summary>Folder relative image paths are resolved against.</summary>
        public string? ImageFolder { get; set; }

        /// <summary>Visual feature column (without <see cref="VisualEncoder"/>).</summary>
        public string FeaturesColumnName { get; set; } = GillColumnNames.ClipPooledFeatures;

        /// <summary>Caption column.</summary>
        public string CaptionColumnName { get; set; } = GillColumnNames.Caption;

        /// <summary>Generation target column (training only).</summary>
        public string TargetColumnName { get; set; } = GillColumnNames.GenerationTarget;

        /// <summary>Maximum token sequence length (BOS + caption + [IMG] tokens), GILL's <c>--max-len</c> (32).</summary>
        public int MaxSequenceLength { get; set; } = 32;

        /// <summary>Rows per micro-batch (GILL: 200 global).</summary>
        public int BatchSize { get; set; } = 16;

        /// <summary>Passes over the data (used when <see cref="MaxSteps"/> is null).</summary>
        public int Epochs { get; set; } = 1;

        /// <summary>Total optimizer steps; null: <see cref="Epochs"/> × batches per epoch ÷ accumulation.</summary>
        public int? MaxSteps { get; set; }

        /// <summary>Seed of initialisation, data order and concatenation draws; null draws one from the MLContext.</summary>
        public int? Seed { get; set; }

        /// <summary>Optimizer, schedule, loss weights, concatenation and checkpoint settings (its TotalSteps and Seed are set by the trainer).</summary>
        public GillTrainingOptions Training { get; set; } = new();

        /// <summary>Progress after each optimizer step.</summary>
        public IProgress<GillTrainingProgress>? Progress { get; set; }

        /// <summary>Cancellation, checked before every step; a cancelled fit writes a checkpoint (when configured) and throws <see cref="OperationCanceledException"/>.</summary>
        public CancellationToken CancellationToken { get; set; }

        /// <summary>ML.NET channel message every this many steps.</summary>
        public int LogEveryNSteps { get; set; } = 50;

        /// <summary>Rows per batched call of the fitted transformer.</summary>
        public int TransformBatchSize { get; set; } = 32;

        /// <summary>Output column names.</summary>
        public string VisualTokensColumnName { get; set; } = GillColumnNames.VisualTokens;

        /// <summary>Output column of the [IMG] hidden states.</summary>
        public string ImgHiddenStatesColumnName { get; set; } = GillColumnNames.ImgHiddenStates;

        /// <summary>Output column of the generation embedding.</summary>
        public string GenerationEmbeddingColumnName { get; set; } = GillColumnNames.GenerationEmbedding;

        /// <summary>Output column of the text retrieval embedding.</summary>
        public string TextRetrievalEmbeddingColumnName { get; set; } = GillColumnNames.TextRetrievalEmbedding;

        /// <summary>Output column of the image retrieval embedding.</summary>
        public string ImageRetrievalEmbeddingColumnName { get; set; } = GillColumnNames.ImageRetrievalEmbedding;

        /// <summary>
        /// Optional further training of the generation mapper alone after the joint steps (null or 0 epochs: none, as
        /// GILL's recipe). The [IMG] hidden states of the training captions are computed once (the LM is frozen and E_img
        /// fixed by then) and the mapper takes many cheap steps on them against the targets — see
        /// <see cref="GillMapperDistillation"/>. Needs the target column and a generation loss weight above zero.
        /// </summary>
        public GillMapperDistillationOptions? MapperDistillation { get; set; }

        internal void Validate()
        {
            if (Backbone is null) throw new ArgumentNullException(nameof(Backbone), "The GILL trainer needs Options.Backbone (GillLanguageBackbone.Load).");
            ArgumentNullException.ThrowIfNull(Training, nameof(Training));
            Training.Validate();
            if (MaxSequenceLength < 2) throw new ArgumentOutOfRangeException(nameof(MaxSequenceLength), MaxSequenceLength, "MaxSequenceLength is too small.");
            if (BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be positive.");
            if (Epochs <= 0) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "Epochs must be positive.");
            if (MaxSteps is <= 0) throw new ArgumentOutOfRangeException(nameof(MaxSteps), MaxSteps, "MaxSteps must be positive.");
            if (LogEveryNSteps <= 0) throw new ArgumentOutOfRangeException(nameof(LogEveryNSteps), LogEveryNSteps, "LogEveryNSteps must be positive.");
            if (TransformBatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(TransformBatchSize), TransformBatchSize, "TransformBatchSize must be positive.");
            var names = new[] { VisualTokensColumnName, ImgHiddenStatesColumnName, GenerationEmbeddingColumnName, TextRetrievalEmbeddingColumnName, ImageRetrievalEmbeddingColumnName,
                CaptionColumnName, TargetColumnName, VisualEncoder is null ? FeaturesColumnName : ImageColumnName };
            if (names.Any(string.IsNullOrWhiteSpace)) throw new ArgumentException("Column names must not be empty.");
            if (names.Take(5).Distinct(StringComparer.Ordinal).Count() != 5) throw new ArgumentException("The output column names must be distinct.");
            if (MapperDistillation is { Epochs: > 0 } md)
            {
                md.Validate();
                if (!(Training.GenerationLossWeight > 0))
                    throw new ArgumentException("MapperDistillation needs the generation targets: Training.GenerationLossWeight must be above zero.", nameof(MapperDistillation));
            }
        }

        internal Options Clone()
        {
            var o = (Options)MemberwiseClone();
            o.Training = Training.Clone();
            return o;
        }
    }

    private readonly Options _options;
    private readonly GillConfig _config;

    internal GillJointTrainer(MLContext context, Options options) : base(context, Stage)
    {
        ArgumentNullException.ThrowIfNull(options);
        var o = options.Clone();
        o.Validate();
        _options = o;
        _config = o.Backbone!.Configure(o.Architecture ?? GillConfig.Default());
        if (o.VisualEncoder is { } enc && enc.FeatureSize != _config.VisualHiddenSize)
            throw new ArgumentException($"The visual encoder '{enc.Name}' gives {enc.FeatureSize}-d features, the GILL architecture expects visual_hidden_size = {_config.VisualHiddenSize}.", nameof(options));
        var cols = GillTransformer.ColumnNames.From(o);
        InputColumns = GillTransformer.Inputs(cols, _config);
        OutputColumns = GillTransformer.Outputs(cols, _config, o.Backbone.EmbeddingSize);
        TrainingColumns = o.Training.GenerationLossWeight > 0
            ? new[] { GillColumn.FloatVector(o.TargetColumnName, _config.NumClipTokens, _config.GenEmbDim) }
            : Array.Empty<GillColumn>();
    }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> TrainingColumns { get; }

    /// <inheritdoc />
    protected override GillTransformer FitCore(IDataView input)
    {
        var o = _options;
        int seed = ResolveSeed(o.Seed);
        var parts = GillParts.Create(new BackboneLease(o.Backbone!, owned: false), _config, o.MaxSequenceLength, seed);
        try
        {
            using var ch = StartChannel();
            long rows = StageData.CountRows(input);
            if (rows == 0) throw new InvalidDataException($"{Stage}: the training data has no rows.");
            long batchesPerEpoch = (rows + o.BatchSize - 1) / o.BatchSize;
            long steps = o.MaxSteps ?? Math.Max(1, batchesPerEpoch * o.Epochs / o.Training.GradAccumulationSteps);
            var training = o.Training.Clone();
            training.TotalSteps = checked((int)steps);
            training.Seed = seed;
            ch.Info(MessageSensitivity.None, $"{Stage}: joint training of {parts.Core.Heads.parameters().Sum(p => p.numel())} parameters on {rows} rows, " +
                $"batch {o.BatchSize}, {steps} steps, seed {seed}{(training.CheckpointDirectory is null ? "" : $", checkpoints in '{training.CheckpointDirectory}'")}.");
            var source = new DataViewBatchSource(Context, input, InputColumns.Concat(TrainingColumns).ToArray(), o, parts, seed);
            var progress = new ChannelProgress(ch, o.Progress, o.LogEveryNSteps);
            GillTrainingResult result;
            using (var trainer = new GillTrainer(parts.Core, training))
                result = trainer.Train(source, progress, o.CancellationToken);
            if (result.ResumedFromStep > 0) ch.Info(MessageSensitivity.None, $"{Stage}: resumed from step {result.ResumedFromStep}.");
            if (result.Cancelled)
                throw new OperationCanceledException($"{Stage}: training was cancelled after {result.StepsCompleted} steps" +
                    (result.LastCheckpoint is null ? "." : $"; the checkpoint '{result.LastCheckpoint}' resumes it."), o.CancellationToken);
            ch.Info(MessageSensitivity.None, $"{Stage}: done, {result.StepsCompleted} steps, last loss {result.LastLosses?.Total:G5}.");
            if (o.MapperDistillation is { Epochs: > 0 } md)
            {
                var (states, targets) = CollectMapperPairs(input, parts, o.BatchSize);
                using (states)
                using (targets)
                {
                    var distill = new GillMapperDistillationOptions
                    {
                        Epochs = md.Epochs, BatchSize = md.BatchSize, LearningRate = md.LearningRate, WeightDecay = md.WeightDecay,
                        GradClip = md.GradClip, Loss = training.GenerationLoss, Seed = unchecked(seed * 31L + 17),
                    };
                    var losses = GillMapperDistillation.Run(parts.Core, states, targets, distill, o.Progress, o.CancellationToken);
                    ch.Info(MessageSensitivity.None, $"{Stage}: mapper distillation, {md.Epochs} epochs over {states.shape[0]} rows, loss {losses[0]:G5} → {losses[^1]:G5}.");
                }
            }
            return new GillTransformer(Context, parts, GillTransformer.ColumnNames.From(o), o.VisualEncoder, ownsEncoder: false, o.ImageFolder, o.TransformBatchSize)
            {
                TrainingSummary = new GillTransformer.TrainingRecord(o.BatchSize, o.Epochs, result.StepsCompleted, rows, training, o.MapperDistillation is { Epochs: > 0 } ? o.MapperDistillation : null),
            };
        }
        catch
        {
            parts.Release();
            throw;
        }
    }

    /// <summary>Forwards progress to the caller and logs to the ML.NET channel every N steps.</summary>
    /// <summary>[IMG] hidden states [N, r, D] of every training caption (text-only pass, no gradients) and their targets [N, L, m], on the CPU.</summary>
    private (Tensor States, Tensor Targets) CollectMapperPairs(IDataView input, GillParts parts, int batchSize)
    {
        var o = _options;
        var columns = new[] { GillColumn.Text(o.CaptionColumnName), GillColumn.FloatVector(o.TargetColumnName, _config.NumClipTokens, _config.GenEmbDim) };
        var states = new List<Tensor>();
        var targets = new List<Tensor>();
        try
        {
            using var noGrad = torch.no_grad();
            parts.Core.Heads.eval();
            foreach (var b in StageData.Batches(Context, input, columns, Math.Max(batchSize, 64), null, Stage, o.ImageFolder))
            {
                o.CancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                var h = parts.ImgHiddenStates(b.GetTexts(o.CaptionColumnName), b.Positions.ToArray(), Stage, o.CaptionColumnName);
                states.Add(h.to(ScalarType.Float32).cpu().detach().MoveToOuterDisposeScope());
                targets.Add(b.GetTensor(o.TargetColumnName).to(ScalarType.Float32).cpu().detach().MoveToOuterDisposeScope());
            }
            return (torch.cat(states, 0), torch.cat(targets, 0));
        }
        finally
        {
            foreach (var t in states.Concat(targets)) t.Dispose();
        }
    }

    private sealed class ChannelProgress : IProgress<GillTrainingProgress>
    {
        private readonly IChannel _ch;
        private readonly IProgress<GillTrainingProgress>? _user;
        private readonly int _every;

        public ChannelProgress(IChannel ch, IProgress<GillTrainingProgress>? user, int every)
        {
            _ch = ch;
            _user = user;
            _every = every;
        }

        public void Report(GillTrainingProgress value)
        {
            _user?.Report(value);
            if (value.Step % _every == 0 || value.Step == value.TotalSteps)
            {
                var l = value.Losses;
                _ch.Info(MessageSensitivity.None, $"{Stage}: step {value.Step}/{value.TotalSteps}, loss {l.Total:G5} (cap {l.Captioning:G4}, ret-text {l.RetrievalText:G4}, " +
                    $"gen-text {l.GenerationText:G4}, nce {l.Contrastive:G4}, gen {l.Generation:G4}), lr {value.LearningRate:G3}, {value.ExamplesPerSecond:F1} rows/s.");
            }
        }
    }

    /// <summary>Batches of an <see cref="IDataView"/> in a seeded shuffled order per epoch (deterministic, so a run can resume).</summary>
    private sealed class DataViewBatchSource : IGillBatchSource
    {
        private readonly MLContext _context;
        private readonly IDataView _data;
        private readonly IReadOnlyList<GillColumn> _columns;
        private readonly Options _o;
        private readonly GillParts _parts;
        private readonly int _seed;

        public DataViewBatchSource(MLContext context, IDataView data, IReadOnlyList<GillColumn> columns, Options o, GillParts parts, int seed)
        {
            _context = context;
            _data = data;
            _columns = columns;
            _o = o;
            _parts = parts;
            _seed = seed;
        }

        public IEnumerable<Training.GillBatch> GetBatches(int epoch)
        {
            foreach (var b in StageData.Batches(_context, _data, _columns, _o.BatchSize, unchecked(_seed + 7919 * epoch), Stage, _o.ImageFolder))
            {
                var rows = b.Positions.ToArray();
                Tensor features = _o.VisualEncoder is { } enc ? GillTransformer.Encode(enc, b.GetImages(_o.ImageColumnName), Stage) : b.GetTensor(_o.FeaturesColumnName);
                var (ids, lens) = _parts.Sequences(b.GetTexts(_o.CaptionColumnName), rows, Stage, _o.CaptionColumnName);
                Tensor? targets = _o.Training.GenerationLossWeight > 0 ? b.GetTensor(_o.TargetColumnName) : null;
                yield return new Training.GillBatch(features, ids, lens, targets);
            }
        }
    }
}

/// <summary>
/// The fitted GILL model: adds the visual tokens, [IMG] hidden states, generation embedding and both retrieval
/// embeddings in one batched pass, and exposes the individual stage transformers (sharing its weights).
/// </summary>
[GillStage(GillJointTrainer.Stage)]
public sealed class GillTransformer : GillStageTransformerBase
{
    private readonly ColumnNames _names;
    private readonly bool _ownsEncoder;
    private readonly string? _imageFolder;
    private readonly List<IDisposable> _children = new();

    internal sealed record ColumnNames(
        [property: JsonPropertyName("features")] string Features,
        [property: JsonPropertyName("image")] string? Image,
        [property: JsonPropertyName("caption")] string Caption,
        [property: JsonPropertyName("visualTokens")] string VisualTokens,
        [property: JsonPropertyName("imgHiddenStates")] string ImgHiddenStates,
        [property: JsonPropertyName("generationEmbedding")] string GenerationEmbedding,
        [property: JsonPropertyName("textRetrievalEmbedding")] string TextRetrievalEmbedding,
        [property: JsonPropertyName("imageRetrievalEmbedding")] string ImageRetrievalEmbedding)
    {
        public static ColumnNames From(GillJointTrainer.Options o) => new(o.FeaturesColumnName, o.VisualEncoder is null ? null : o.ImageColumnName, o.CaptionColumnName,
            o.VisualTokensColumnName, o.ImgHiddenStatesColumnName, o.GenerationEmbeddingColumnName, o.TextRetrievalEmbeddingColumnName, o.ImageRetrievalEmbeddingColumnName);
    }

    internal static IReadOnlyList<GillColumn> Inputs(ColumnNames n, GillConfig c) => new[]
    {
        n.Image is { } image ? GillColumn.Image(image) : GillColumn.FloatVector(n.Features, c.VisualHiddenSize),
        GillColumn.Text(n.Caption),
    };

    internal static IReadOnlyList<GillColumn> Outputs(ColumnNames n, GillConfig c, int d) => new[]
    {
        GillColumn.FloatVector(n.VisualTokens, c.NVisualTokens, d),
        GillColumn.FloatVector(n.ImgHiddenStates, c.NumTokens, d),
        GillColumn.FloatVector(n.GenerationEmbedding, c.NumClipTokens, c.GenEmbDim),
        GillColumn.FloatVector(n.TextRetrievalEmbedding, c.RetEmbDim),
        GillColumn.FloatVector(n.ImageRetrievalEmbedding, c.RetEmbDim),
    };

    internal GillTransformer(MLContext context, GillParts parts, ColumnNames names, IVisualEncoder? encoder, bool ownsEncoder, string? imageFolder, int batchSize)
        : base(context, GillJointTrainer.Stage, batchSize, parts)
    {
        _names = names;
        VisualEncoder = encoder;
        _ownsEncoder = ownsEncoder;
        _imageFolder = imageFolder;
        if ((encoder is null) != (names.Image is null)) throw new ArgumentException("An image column needs a visual encoder and vice versa.");
        InputColumns = Inputs(names, parts.Config);
        OutputColumns = Outputs(names, parts.Config, parts.Backbone.EmbeddingSize);
    }

    /// <summary>How the model was trained (recorded in the saved manifest under "training"; null for loaded models).</summary>
    internal TrainingRecord? TrainingSummary { get; init; }

    internal sealed record TrainingRecord(
        [property: JsonPropertyName("batchSize")] int BatchSize,
        [property: JsonPropertyName("epochs")] int Epochs,
        [property: JsonPropertyName("steps")] long Steps,
        [property: JsonPropertyName("rows")] long Rows,
        [property: JsonPropertyName("options")] GillTrainingOptions Options,
        [property: JsonPropertyName("mapperDistillation")] GillMapperDistillationOptions? MapperDistillation = null);

    /// <summary>The frozen visual encoder when the model reads images (null when it reads features).</summary>
    public IVisualEncoder? VisualEncoder { get; }

    /// <inheritdoc />
    public override string? ImageFolder => _imageFolder;

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    private T Child<T>(T t) where T : IDisposable
    {
        _children.Add(t);
        return t;
    }

    /// <summary>The visual feature stage (only when the model reads images): image → features column.</summary>
    public VisualFeatureExtractionTransformer? VisualFeatures => VisualEncoder is null ? null : _visual ??= Child(new VisualFeatureExtractionTransformer(Context,
        new VisualFeatureExtractionEstimator.Options { Encoder = VisualEncoder, InputColumnName = _names.Image!, OutputColumnName = _names.Features, ImageFolder = _imageFolder, BatchSize = BatchSize }));
    private VisualFeatureExtractionTransformer? _visual;

    /// <summary>The caption mapping stage (features → visual tokens).</summary>
    public CaptionMappingTransformer CaptionMapping => _cap ??= Child(new CaptionMappingTransformer(Context, Parts.AddRef(), _names.Features, _names.VisualTokens, BatchSize));
    private CaptionMappingTransformer? _cap;

    /// <summary>The captioning stage (features → generated caption).</summary>
    public CaptioningTransformer Captioning => _captioning ??= Child(new CaptioningTransformer(Context, Parts.AddRef(), _names.Features, CaptioningTransformer.DefaultOutputColumnName, 16, BatchSize));
    private CaptioningTransformer? _captioning;

    /// <summary>The [IMG] token stage (caption → [IMG] hidden states).</summary>
    public ImgTokenTransformer ImgTokens => _img ??= Child(new ImgTokenTransformer(Context, Parts.AddRef(), _names.Caption, _names.ImgHiddenStates, BatchSize));
    private ImgTokenTransformer? _img;

    /// <summary>The generation mapper stage ([IMG] hidden states → generation embedding).</summary>
    public GillMapperTransformer GillMapper => _mapper ??= Child(new GillMapperTransformer(Context, Parts.AddRef(), _names.ImgHiddenStates, _names.GenerationEmbedding, BatchSize));
    private GillMapperTransformer? _mapper;

    /// <summary>The retrieval projection stage ([IMG] hidden states + features → retrieval embeddings).</summary>
    public RetrievalProjectionTransformer Retrieval => _ret ??= Child(new RetrievalProjectionTransformer(Context, Parts.AddRef(), _names.ImgHiddenStates, _names.Features,
        _names.TextRetrievalEmbedding, _names.ImageRetrievalEmbedding, BatchSize));
    private RetrievalProjectionTransformer? _ret;

    internal static Tensor Encode(IVisualEncoder encoder, IReadOnlyList<SkiaSharp.SKBitmap> images, string stage)
    {
        var r = encoder.Encode(images, false);
        if (r.Count != images.Count) throw new InvalidOperationException($"{stage}: the visual encoder '{encoder.Name}' returned {r.Count} feature rows for {images.Count} images.");
        return torch.tensor(r.Features, new long[] { r.Count, r.FeatureSize });
    }

    /// <inheritdoc />
    protected override void ProcessBatch(MLNet.GillBatch batch)
    {
        var core = Parts.Core;
        var n = _names;
        bool wantTokens = batch.IsOutputActive(n.VisualTokens), wantImage = batch.IsOutputActive(n.ImageRetrievalEmbedding);
        bool wantHidden = batch.IsOutputActive(n.ImgHiddenStates), wantGen = batch.IsOutputActive(n.GenerationEmbedding), wantText = batch.IsOutputActive(n.TextRetrievalEmbedding);
        if (wantTokens || wantImage)
        {
            var features = (VisualEncoder is { } enc ? Encode(enc, batch.GetImages(n.Image!), StageName) : batch.GetTensor(n.Features)).to(core.Device);
            if (wantTokens) batch.SetOutput(n.VisualTokens, core.VisualTokens(features));
            if (wantImage) batch.SetOutput(n.ImageRetrievalEmbedding, core.ImageRetrievalEmbedding(features));
        }
        if (wantHidden || wantGen || wantText)
        {
            var hidden = Parts.ImgHiddenStates(batch.GetTexts(n.Caption), batch.Positions.ToArray(), StageName, n.Caption);
            if (wantHidden) batch.SetOutput(n.ImgHiddenStates, hidden);
            if (wantGen) batch.SetOutput(n.GenerationEmbedding, core.GenerationEmbedding(hidden));
            if (wantText) batch.SetOutput(n.TextRetrievalEmbedding, core.TextRetrievalEmbedding(hidden));
        }
    }

    private sealed record Saved(
        [property: JsonPropertyName("columns")] ColumnNames Columns,
        [property: JsonPropertyName("imageFolder")] string? ImageFolder,
        [property: JsonPropertyName("encoderKind")] string? EncoderKind);

    internal override object StageOptions => new Saved(_names, _imageFolder, (VisualEncoder as IPersistableVisualEncoder)?.EncoderKind);

    /// <inheritdoc />
    public override void SaveTo(GillModelWriter writer)
    {
        if (VisualEncoder is not null and not IPersistableVisualEncoder)
            throw new NotSupportedException($"The visual encoder '{VisualEncoder.Name}' ({VisualEncoder.GetType().FullName}) cannot be saved: it does not implement IPersistableVisualEncoder.");
        if (TrainingSummary?.Options.TrainLanguageModel == true)
            throw new NotSupportedException("This model was trained with GillTrainingOptions.TrainLanguageModel: a saved GILL model holds the heads only and would reload the original frozen language model.");
        base.SaveTo(writer);
        if (TrainingSummary is not null) writer.SetOptions("training", TrainingSummary);
        (VisualEncoder as IPersistableVisualEncoder)?.SaveTo(writer);
    }

    internal static GillTransformer LoadFrom(GillModelReader reader)
    {
        CheckVersion(reader, GillJointTrainer.Stage);
        var o = reader.GetOptions<Saved>("stage");
        var parts = GillParts.LoadFrom(reader);
        IVisualEncoder? encoder = null;
        try
        {
            if (o.EncoderKind is { } kind) encoder = VisualEncoderRegistry.Load(kind, reader);
            return new GillTransformer(reader.Context, parts, o.Columns, encoder, ownsEncoder: true, o.ImageFolder, reader.BatchSizeOr(32));
        }
        catch
        {
            (encoder as IDisposable)?.Dispose();
            parts.Release();
            throw;
        }
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing && !IsDisposed)
        {
            foreach (var c in _children) c.Dispose();
            if (_ownsEncoder) (VisualEncoder as IDisposable)?.Dispose();
        }
        base.Dispose(disposing);
    }
}
