using System.Text.Json;
using System.Text.Json.Serialization;
using Gill.ML.Persistence;
using Microsoft.ML.OnnxRuntime;
using SkiaSharp;

namespace Gill.ML.Stages.VisualFeatures;

/// <summary>
/// An <see cref="IVisualEncoder"/> running any ONNX image model through ONNX Runtime: images are preprocessed with an
/// <see cref="ImagePreprocessor"/>, optionally passed through a preprocessing ONNX model, and the output tensor
/// <c>[B, …]</c> is flattened per image. A model exported with a fixed batch of 1 is rewritten to take whole batches.
/// </summary>
/// <remarks>
/// <see cref="ResNet18"/> is the ImageNet ResNet-18 that ML.NET's <c>DnnFeaturizeImage</c> uses (package
/// Microsoft.ML.DnnImageFeaturizer.ResNet18, copied to <c>DnnImageModels/</c> in the build output): RGB planes in 0–255,
/// then ResNetPreprocess.onnx (reorders to BGR and subtracts a mean image), then ResNet18.onnx, whose 512-d average-pooled
/// output <c>Pooling395_Output_0</c> is the feature vector.
/// </remarks>
public sealed class OnnxVisualEncoder : IPersistableVisualEncoder, IDisposable
{
    internal const string Kind = "onnx";
    private readonly InferenceSession _session;
    private readonly InferenceSession? _prep;
    private readonly string _inputName;
    private readonly string _prepInputName = "";
    private readonly string _prepOutputName = "";
    private bool _disposed;

    /// <summary>Options of an <see cref="OnnxVisualEncoder"/>.</summary>
    public sealed class Options
    {
        /// <summary>Path of the ONNX model.</summary>
        public string ModelPath { get; set; } = "";

        /// <summary>Name of the image input (null: the model's first input).</summary>
        public string? InputName { get; set; }

        /// <summary>Name of the feature output (null: the model's first output).</summary>
        public string? OutputName { get; set; }

        /// <summary>Name of a projected-embedding output, if the model has one.</summary>
        public string? EmbeddingOutputName { get; set; }

        /// <summary>Optional ONNX model applied to the preprocessed pixels first (one input, one output).</summary>
        public string? PreprocessorModelPath { get; set; }

        /// <summary>Resize and normalisation of the images.</summary>
        public ImagePreprocessor Preprocessing { get; set; } = new();

        /// <summary>Rewrite a fixed batch dimension of 1 into a symbolic one so batches run in one call (default true).</summary>
        public bool MakeBatchDimensionDynamic { get; set; } = true;

        /// <summary>ONNX Runtime intra-op threads (0: its default).</summary>
        public int IntraOpThreads { get; set; }

        /// <summary>A display name (default: the model's file name).</summary>
        public string? Name { get; set; }
    }

    /// <summary>Opens an ONNX image model.</summary>
    /// <exception cref="FileNotFoundException">A model file is missing.</exception>
    /// <exception cref="ArgumentException">An input/output name is not in the model, or the output is not <c>[B, …]</c>.</exception>
    public OnnxVisualEncoder(Options options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Preprocessing.Validate();
        Settings = options;
        _session = OpenSession(options.ModelPath, options, "model");
        try
        {
            _inputName = options.InputName ?? _session.InputMetadata.Keys.First();
            if (!_session.InputMetadata.ContainsKey(_inputName))
                throw new ArgumentException($"ONNX model '{options.ModelPath}' has no input '{_inputName}' (inputs: {string.Join(", ", _session.InputMetadata.Keys)}).", nameof(options));
            OutputName = options.OutputName ?? _session.OutputMetadata.Keys.First();
            FeatureSize = checked((int)OutputShape(OutputName).Aggregate(1L, (a, b) => a * b));
            if (options.EmbeddingOutputName is { } emb)
            {
                EmbeddingSize = checked((int)OutputShape(emb).Aggregate(1L, (a, b) => a * b));
            }
            if (options.PreprocessorModelPath is { } prepPath)
            {
                _prep = OpenSession(prepPath, options, "preprocessor");
                _prepInputName = _prep.InputMetadata.Keys.First();
                _prepOutputName = _prep.OutputMetadata.Keys.First();
            }
            var inDims = (_prep?.InputMetadata[_prepInputName] ?? _session.InputMetadata[_inputName]).Dimensions;
            var p = options.Preprocessing;
            if (inDims.Length != 4 || (inDims[1] > 0 && inDims[1] != 3) || (inDims[2] > 0 && inDims[2] != p.Height) || (inDims[3] > 0 && inDims[3] != p.Width))
                throw new ArgumentException($"ONNX model '{options.PreprocessorModelPath ?? options.ModelPath}' takes input [{string.Join(", ", inDims)}], " +
                    $"which does not match the preprocessing output [B, 3, {p.Height}, {p.Width}].", nameof(options));
            Name = options.Name ?? Path.GetFileNameWithoutExtension(options.ModelPath);
        }
        catch
        {
            _prep?.Dispose();
            _session.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The ResNet-18 ImageNet featurizer of ML.NET's DnnImageFeaturizer (512-d). <paramref name="modelsFolder"/> is the
    /// <c>DnnImageModels</c> folder (default: the one beside the application).
    /// </summary>
    public static OnnxVisualEncoder ResNet18(string? modelsFolder = null, ImageResizeMode resizeMode = ImageResizeMode.CenterCrop)
    {
        var folder = modelsFolder ?? Path.Combine(AppContext.BaseDirectory, "DnnImageModels");
        return new OnnxVisualEncoder(new Options
        {
            Name = "ResNet18",
            ModelPath = Path.Combine(folder, "ResNet18Onnx", "ResNet18.onnx"),
            PreprocessorModelPath = Path.Combine(folder, "ResNetPrepOnnx", "ResNetPreprocess.onnx"),
            InputName = "Input247",
            OutputName = "Pooling395_Output_0",
            Preprocessing = new ImagePreprocessor { Width = 224, Height = 224, ResizeMode = resizeMode, Scale = 1f, ChannelOrder = ChannelOrder.Rgb },
        });
    }

    /// <summary>The options this encoder was built with.</summary>
    public Options Settings { get; }

    /// <inheritdoc />
    public string Name { get; }

    /// <summary>Name of the feature output.</summary>
    public string OutputName { get; }

    /// <inheritdoc />
    public int FeatureSize { get; }

    /// <inheritdoc />
    public int EmbeddingSize { get; }

    /// <summary>True when the model was rewritten to take batches larger than 1.</summary>
    public bool BatchDimensionRewritten { get; private set; }

    string IPersistableVisualEncoder.EncoderKind => Kind;

    private InferenceSession OpenSession(string path, Options options, string what)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"ONNX {what} file not found: '{path}'.", path);
        var bytes = File.ReadAllBytes(path);
        if (options.MakeBatchDimensionDynamic)
        {
            bytes = OnnxBatchDimension.MakeDynamic(bytes, "batch", out bool changed);
            BatchDimensionRewritten |= changed;
        }
        using var so = new SessionOptions();
        if (options.IntraOpThreads > 0) so.IntraOpNumThreads = options.IntraOpThreads;
        try
        {
            return new InferenceSession(bytes, so);
        }
        catch (OnnxRuntimeException e)
        {
            throw new InvalidDataException($"ONNX Runtime cannot load the {what} '{path}': {e.Message}", e);
        }
    }

    private long[] OutputShape(string name)
    {
        if (!_session.OutputMetadata.TryGetValue(name, out var meta))
            throw new ArgumentException($"ONNX model has no output '{name}' (outputs: {string.Join(", ", _session.OutputMetadata.Keys)}).", nameof(name));
        var dims = meta.Dimensions;
        if (dims.Length < 2 || dims.Skip(1).Any(d => d <= 0))
            throw new ArgumentException($"ONNX output '{name}' has shape [{string.Join(", ", dims)}]; expected [batch, fixed sizes…].", nameof(name));
        return dims.Skip(1).Select(d => (long)d).ToArray();
    }

    /// <inheritdoc />
    public VisualEncoding Encode(IReadOnlyList<SKBitmap> images, bool includeEmbedding)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(images);
        int n = images.Count;
        if (includeEmbedding && EmbeddingSize == 0)
            throw new InvalidOperationException($"ONNX encoder '{Name}' has no embedding output (set Options.EmbeddingOutputName).");
        var p = Settings.Preprocessing;
        var pixels = p.Process(images);
        var shape = new long[] { n, 3, p.Height, p.Width };
        var outputs = includeEmbedding ? new[] { OutputName, Settings.EmbeddingOutputName! } : new[] { OutputName };
        using var runOptions = new RunOptions();
        using var input = OrtValue.CreateTensorValueFromMemory(pixels, shape);
        OrtValue? prepared = null;
        IDisposableReadOnlyCollection<OrtValue>? prepResult = null;
        try
        {
            if (_prep is not null)
            {
                prepResult = _prep.Run(runOptions, new Dictionary<string, OrtValue> { [_prepInputName] = input }, new[] { _prepOutputName });
                prepared = prepResult[0];
            }
            using var result = _session.Run(runOptions, new Dictionary<string, OrtValue> { [_inputName] = prepared ?? input }, outputs);
            var features = Copy(result[0], n, FeatureSize, OutputName);
            float[]? embeddings = includeEmbedding ? Copy(result[1], n, EmbeddingSize, Settings.EmbeddingOutputName!) : null;
            return new VisualEncoding(n, FeatureSize, features, EmbeddingSize, embeddings);
        }
        finally
        {
            prepResult?.Dispose();
        }
    }

    private float[] Copy(OrtValue value, int n, int size, string name)
    {
        var span = value.GetTensorDataAsSpan<float>();
        if (span.Length != (long)n * size)
            throw new InvalidDataException($"ONNX output '{name}' of '{Name}' has {span.Length} values for {n} images, expected {n} × {size}.");
        return span.ToArray();
    }

    /// <summary>Settings written to a saved model.</summary>
    internal sealed record SavedOptions(
        [property: JsonPropertyName("name")] string Name,
        [property: JsonPropertyName("inputName")] string InputName,
        [property: JsonPropertyName("outputName")] string OutputName,
        [property: JsonPropertyName("embeddingOutputName")] string? EmbeddingOutputName,
        [property: JsonPropertyName("width")] int Width,
        [property: JsonPropertyName("height")] int Height,
        [property: JsonPropertyName("resizeMode")] ImageResizeMode ResizeMode,
        [property: JsonPropertyName("channelOrder")] ChannelOrder ChannelOrder,
        [property: JsonPropertyName("scale")] float Scale,
        [property: JsonPropertyName("mean")] float[] Mean,
        [property: JsonPropertyName("std")] float[] Std,
        [property: JsonPropertyName("filterQuality")] SKFilterQuality FilterQuality,
        [property: JsonPropertyName("makeBatchDimensionDynamic")] bool MakeBatchDimensionDynamic,
        [property: JsonPropertyName("hasPreprocessor")] bool HasPreprocessor);

    /// <inheritdoc />
    public void SaveTo(GillModelWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        var p = Settings.Preprocessing;
        writer.SetOptions("encoder", new SavedOptions(Name, _inputName, OutputName, Settings.EmbeddingOutputName, p.Width, p.Height, p.ResizeMode,
            p.ChannelOrder, p.Scale, p.Mean, p.Std, p.FilterQuality, Settings.MakeBatchDimensionDynamic, _prep is not null));
        writer.AddBackbone("onnx-model", Settings.ModelPath);
        if (Settings.PreprocessorModelPath is { } prep) writer.AddBackbone("onnx-preprocessor", prep);
    }

    internal static IVisualEncoder LoadFrom(GillModelReader reader)
    {
        var o = reader.GetOptions<SavedOptions>("encoder");
        return new OnnxVisualEncoder(new Options
        {
            Name = o.Name,
            ModelPath = reader.ResolveBackbone("onnx-model"),
            PreprocessorModelPath = o.HasPreprocessor ? reader.ResolveBackbone("onnx-preprocessor") : null,
            InputName = o.InputName,
            OutputName = o.OutputName,
            EmbeddingOutputName = o.EmbeddingOutputName,
            MakeBatchDimensionDynamic = o.MakeBatchDimensionDynamic,
            Preprocessing = new ImagePreprocessor
            {
                Width = o.Width, Height = o.Height, ResizeMode = o.ResizeMode, ChannelOrder = o.ChannelOrder,
                Scale = o.Scale, Mean = o.Mean, Std = o.Std, FilterQuality = o.FilterQuality,
            },
        });
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _prep?.Dispose();
        _session.Dispose();
    }
}
