using System.Text.Json.Serialization;
using Gill.ML.MLNet;
using Gill.ML.Persistence;
using Microsoft.ML;

namespace Gill.ML.Stages.VisualFeatures;

/// <summary>
/// Extracts visual features from images with a frozen <see cref="IVisualEncoder"/> (CLIP, ResNet-18 ONNX, …).
/// Nothing is learned: <see cref="GillEstimatorBase{T}.Fit"/> only checks the schema.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// | Column | Direction | Type |
/// |---|---|---|
/// | `InputColumnName` (default `Image`) | in | `MLImage`, or `String` path of an image file |
/// | `OutputColumnName` | out | `Vector<Single, D>`, D = encoder's `FeatureSize` |
/// | `EmbeddingColumnName` (optional) | out | `Vector<Single, E>`, E = encoder's `EmbeddingSize` |
///
/// | Characteristic | Value |
/// |---|---|
/// | Trainable | no (frozen encoder) |
/// | Batching | `BatchSize` rows per encoder call in `Transform`; one row per call in `PredictionEngine` |
/// | Persistence | `mlContext.Gill().Model.Save` (encoder options and backbone hash; weights stay where they are) |
/// ]]></format>
/// </remarks>
public sealed class VisualFeatureExtractionEstimator : GillEstimatorBase<VisualFeatureExtractionTransformer>
{
    internal const string Stage = "VisualFeatures";

    /// <summary>Options of the visual feature extraction stage.</summary>
    public sealed class Options
    {
        /// <summary>The encoder. Required.</summary>
        public IVisualEncoder? Encoder { get; set; }

        /// <summary>Output feature column (default <see cref="GillColumnNames.ClipPooledFeatures"/>).</summary>
        public string OutputColumnName { get; set; } = GillColumnNames.ClipPooledFeatures;

        /// <summary>Image column: <c>MLImage</c> or image path text (default <see cref="GillColumnNames.Image"/>).</summary>
        public string InputColumnName { get; set; } = GillColumnNames.Image;

        /// <summary>Optional column for the encoder's projected embedding (e.g. <see cref="GillColumnNames.ClipImageEmbedding"/>).</summary>
        public string? EmbeddingColumnName { get; set; }

        /// <summary>Images per encoder call.</summary>
        public int BatchSize { get; set; } = Defaults.BatchSize;

        /// <summary>Folder relative image paths are resolved against (null: the current directory).</summary>
        public string? ImageFolder { get; set; }

        /// <summary>The encoder is disposed with the transformer (default false: the caller keeps ownership).</summary>
        public bool TransformerOwnsEncoder { get; set; }

        /// <summary>Cancellation checked before each batch.</summary>
        public CancellationToken CancellationToken { get; set; }

        internal void Validate()
        {
            if (Encoder is null) throw new ArgumentNullException(nameof(Encoder), "The visual feature stage needs an encoder (Options.Encoder).");
            if (string.IsNullOrWhiteSpace(OutputColumnName)) throw new ArgumentException("OutputColumnName must not be empty.", nameof(OutputColumnName));
            if (string.IsNullOrWhiteSpace(InputColumnName)) throw new ArgumentException("InputColumnName must not be empty.", nameof(InputColumnName));
            if (BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be positive.");
            if (Encoder.FeatureSize <= 0) throw new ArgumentException($"Encoder '{Encoder.Name}' reports FeatureSize {Encoder.FeatureSize}.", nameof(Encoder));
            if (EmbeddingColumnName is not null)
            {
                if (Encoder.EmbeddingSize <= 0)
                    throw new ArgumentException($"EmbeddingColumnName '{EmbeddingColumnName}' was set, but encoder '{Encoder.Name}' has no projected embedding.", nameof(EmbeddingColumnName));
                if (EmbeddingColumnName == OutputColumnName)
                    throw new ArgumentException($"EmbeddingColumnName and OutputColumnName are both '{OutputColumnName}'.", nameof(EmbeddingColumnName));
            }
        }

        internal Options Clone() => (Options)MemberwiseClone();
    }

    internal static class Defaults
    {
        public const int BatchSize = 32;
    }

    private readonly Options _options;

    internal VisualFeatureExtractionEstimator(MLContext context, Options options) : base(context, Stage)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Clone();
        _options.Validate();
        InputColumns = VisualFeatureExtractionTransformer.Inputs(_options);
        OutputColumns = VisualFeatureExtractionTransformer.Outputs(_options);
    }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    protected override VisualFeatureExtractionTransformer FitCore(IDataView input) => new(Context, _options);
}

/// <summary>The visual feature extraction transformer (see <see cref="VisualFeatureExtractionEstimator"/>).</summary>
[GillStage(VisualFeatureExtractionEstimator.Stage)]
public sealed class VisualFeatureExtractionTransformer : GillTransformerBase, IGillPersistable
{
    private readonly VisualFeatureExtractionEstimator.Options _options;

    internal VisualFeatureExtractionTransformer(MLContext context, VisualFeatureExtractionEstimator.Options options)
        : base(context, VisualFeatureExtractionEstimator.Stage, options.BatchSize)
    {
        _options = options.Clone();
        _options.Validate();
        Encoder = _options.Encoder!;
        CancellationToken = _options.CancellationToken;
        InputColumns = Inputs(_options);
        OutputColumns = Outputs(_options);
    }

    internal static IReadOnlyList<GillColumn> Inputs(VisualFeatureExtractionEstimator.Options o) => new[] { GillColumn.Image(o.InputColumnName) };

    internal static IReadOnlyList<GillColumn> Outputs(VisualFeatureExtractionEstimator.Options o)
    {
        var list = new List<GillColumn> { GillColumn.FloatVector(o.OutputColumnName, o.Encoder!.FeatureSize) };
        if (o.EmbeddingColumnName is { } e) list.Add(GillColumn.FloatVector(e, o.Encoder.EmbeddingSize));
        return list;
    }

    /// <summary>The encoder.</summary>
    public IVisualEncoder Encoder { get; }

    /// <summary>Image input column.</summary>
    public string InputColumnName => _options.InputColumnName;

    /// <summary>Feature output column.</summary>
    public string OutputColumnName => _options.OutputColumnName;

    /// <summary>Embedding output column, or null.</summary>
    public string? EmbeddingColumnName => _options.EmbeddingColumnName;

    /// <inheritdoc />
    public override string? ImageFolder => _options.ImageFolder;

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    protected override void ProcessBatch(GillBatch batch)
    {
        var images = batch.GetImages(_options.InputColumnName);
        bool wantFeatures = batch.IsOutputActive(_options.OutputColumnName);
        bool wantEmbedding = _options.EmbeddingColumnName is { } e && batch.IsOutputActive(e);
        var result = Encoder.Encode(images, wantEmbedding);
        if (result.Count != batch.Count || result.FeatureSize != Encoder.FeatureSize)
            throw new InvalidOperationException($"Encoder '{Encoder.Name}' returned {result.Count} × {result.FeatureSize} features for {batch.Count} images; expected {batch.Count} × {Encoder.FeatureSize}.");
        if (wantFeatures) result.Features.AsSpan().CopyTo(batch.GetOutputFloats(_options.OutputColumnName));
        if (wantEmbedding)
        {
            if (result.Embeddings is null || result.EmbeddingSize != Encoder.EmbeddingSize)
                throw new InvalidOperationException($"Encoder '{Encoder.Name}' returned no {Encoder.EmbeddingSize}-d embeddings although they were requested.");
            result.Embeddings.AsSpan().CopyTo(batch.GetOutputFloats(_options.EmbeddingColumnName!));
        }
    }

    /// <inheritdoc />
    public int FormatVersion => 1;

    private sealed record SavedOptions(
        [property: JsonPropertyName("outputColumnName")] string OutputColumnName,
        [property: JsonPropertyName("inputColumnName")] string InputColumnName,
        [property: JsonPropertyName("embeddingColumnName")] string? EmbeddingColumnName,
        [property: JsonPropertyName("batchSize")] int BatchSize,
        [property: JsonPropertyName("imageFolder")] string? ImageFolder,
        [property: JsonPropertyName("encoderKind")] string EncoderKind,
        [property: JsonPropertyName("featureSize")] int FeatureSize,
        [property: JsonPropertyName("embeddingSize")] int EmbeddingSize);

    /// <inheritdoc />
    public void SaveTo(GillModelWriter writer)
    {
        if (Encoder is not IPersistableVisualEncoder p)
            throw new NotSupportedException($"The visual encoder '{Encoder.Name}' ({Encoder.GetType().FullName}) cannot be saved: it does not implement IPersistableVisualEncoder.");
        writer.SetOptions("stage", new SavedOptions(OutputColumnName, InputColumnName, EmbeddingColumnName, BatchSize, ImageFolder, p.EncoderKind, Encoder.FeatureSize, Encoder.EmbeddingSize));
        p.SaveTo(writer);
    }

    internal static VisualFeatureExtractionTransformer LoadFrom(GillModelReader reader)
    {
        if (reader.FormatVersion != 1) throw new InvalidDataException($"{reader.StageFolder}: VisualFeatures format version {reader.FormatVersion} is not supported (expected 1).");
        var o = reader.GetOptions<SavedOptions>("stage");
        var encoder = VisualEncoderRegistry.Load(o.EncoderKind, reader);
        try
        {
            if (encoder.FeatureSize != o.FeatureSize || encoder.EmbeddingSize != o.EmbeddingSize)
                throw new InvalidDataException($"{reader.StageFolder}: the loaded encoder '{encoder.Name}' gives {encoder.FeatureSize}-d features / {encoder.EmbeddingSize}-d embeddings, " +
                    $"the saved stage {o.FeatureSize} / {o.EmbeddingSize}.");
            return new VisualFeatureExtractionTransformer(reader.Context, new VisualFeatureExtractionEstimator.Options
            {
                Encoder = encoder,
                OutputColumnName = o.OutputColumnName,
                InputColumnName = o.InputColumnName,
                EmbeddingColumnName = o.EmbeddingColumnName,
                BatchSize = o.BatchSize,
                ImageFolder = o.ImageFolder,
                TransformerOwnsEncoder = true,
            });
        }
        catch
        {
            (encoder as IDisposable)?.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing && _options.TransformerOwnsEncoder) (Encoder as IDisposable)?.Dispose();
        base.Dispose(disposing);
    }
}
