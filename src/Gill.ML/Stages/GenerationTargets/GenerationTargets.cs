using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Gill.ML.MLNet;
using Gill.ML.Modules;
using Gill.ML.Modules.Clip;
using Gill.ML.Persistence;
using Gill.ML.Tokenization;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Stages.GenerationTargets;

/// <summary>
/// Computes GILL's generation targets (spec §2.2): each caption through the text-to-image model's frozen CLIP text
/// encoder, tokenized with its CLIP tokenizer padded (with the pad token, as Stable Diffusion) and right-truncated to L
/// tokens, giving the <c>last_hidden_state</c> [L × m] that the GILLMapper learns to reproduce. Nothing is trained.
/// Results can be cached on disk, keyed by SHA-256 of (text encoder weights hash, tokenizer hash, L, caption), so a
/// second run does not recompute them; cache files are written atomically.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// | Column | Direction | Type |
/// |---|---|---|
/// | `InputColumnName` (default `Caption`) | in | `String` |
/// | `OutputColumnName` (default `GenerationTarget`) | out | `Vector<Single, L, m>` |
///
/// | Characteristic | Value |
/// |---|---|
/// | Trainable | no (frozen text encoder) |
/// | Cache | `CacheFolder` (optional): one file per caption, `<2 hex>/<sha256>.f32` |
/// | Persistence | `mlContext.Gill().Model.Save` (encoder and tokenizer referenced by path + SHA-256) |
/// ]]></format>
/// </remarks>
public sealed class GenerationTargetEstimator : GillEstimatorBase<GenerationTargetTransformer>
{
    internal const string Stage = "GenerationTargets";

    /// <summary>Options of the generation target stage.</summary>
    public sealed class Options
    {
        /// <summary>Hugging Face folder of the CLIP text encoder (Stable Diffusion's <c>text_encoder/</c>). Required.</summary>
        public string TextEncoderFolder { get; set; } = "";

        /// <summary>Folder of the CLIP tokenizer (Stable Diffusion's <c>tokenizer/</c>); null uses <see cref="TextEncoderFolder"/>.</summary>
        public string? TokenizerFolder { get; set; }

        /// <summary>L: tokens per caption (Stable Diffusion: 77); null uses the encoder's maximum position count.</summary>
        public int? SequenceLength { get; set; }

        /// <summary>Folder of the on-disk cache; null disables caching.</summary>
        public string? CacheFolder { get; set; }

        /// <summary>Caption column.</summary>
        public string InputColumnName { get; set; } = GillColumnNames.Caption;

        /// <summary>Output column.</summary>
        public string OutputColumnName { get; set; } = GillColumnNames.GenerationTarget;

        /// <summary>Captions per encoder call.</summary>
        public int BatchSize { get; set; } = 32;

        /// <summary>Element type of the encoder weights (the output is always float32).</summary>
        public ScalarType DType { get; set; } = ScalarType.Float32;

        internal void Validate()
        {
            if (string.IsNullOrWhiteSpace(TextEncoderFolder)) throw new ArgumentException("TextEncoderFolder is required.", nameof(TextEncoderFolder));
            if (!Directory.Exists(TextEncoderFolder)) throw new DirectoryNotFoundException($"Text encoder folder '{TextEncoderFolder}' does not exist.");
            if (TokenizerFolder is not null && !Directory.Exists(TokenizerFolder)) throw new DirectoryNotFoundException($"Tokenizer folder '{TokenizerFolder}' does not exist.");
            if (SequenceLength is < 2) throw new ArgumentOutOfRangeException(nameof(SequenceLength), SequenceLength, "SequenceLength must hold BOS and EOS (at least 2).");
            if (BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be positive.");
            if (string.IsNullOrWhiteSpace(InputColumnName)) throw new ArgumentException("InputColumnName must not be empty.", nameof(InputColumnName));
            if (string.IsNullOrWhiteSpace(OutputColumnName)) throw new ArgumentException("OutputColumnName must not be empty.", nameof(OutputColumnName));
        }

        internal Options Clone() => (Options)MemberwiseClone();
    }

    private readonly Options _options;

    internal GenerationTargetEstimator(MLContext context, Options options) : base(context, Stage)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Clone();
        _options.Validate();
        var (hidden, maxPositions) = ReadTextConfig(_options.TextEncoderFolder);
        int length = _options.SequenceLength ?? maxPositions;
        if (length > maxPositions)
            throw new ArgumentOutOfRangeException(nameof(options), length, $"SequenceLength {length} exceeds the text encoder's max_position_embeddings ({maxPositions}).");
        InputColumns = new[] { GillColumn.Text(_options.InputColumnName) };
        OutputColumns = new[] { GillColumn.FloatVector(_options.OutputColumnName, length, hidden) };
    }

    /// <summary>(hidden_size, max_position_embeddings) of a CLIP text checkpoint's config.json.</summary>
    internal static (int Hidden, int MaxPositions) ReadTextConfig(string folder)
    {
        var path = Path.Combine(folder, "config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"The text encoder folder has no config.json: '{path}'.", path);
        var json = JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new InvalidDataException($"'{path}' is empty.");
        var text = json["text_config"]?.AsObject() ?? json;
        int hidden = text["hidden_size"]?.GetValue<int>() ?? 512;
        int positions = text["max_position_embeddings"]?.GetValue<int>() ?? 77;
        return (hidden, positions);
    }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <inheritdoc />
    protected override GenerationTargetTransformer FitCore(IDataView input) => new(Context, _options);
}

/// <summary>Caption → text-to-image text-encoder hidden states [L, m] (see <see cref="GenerationTargetEstimator"/>).</summary>
[GillStage(GenerationTargetEstimator.Stage)]
public sealed class GenerationTargetTransformer : GillTransformerBase, IGillPersistable
{
    private static readonly byte[] Magic = "GILLTGT1"u8.ToArray();
    private readonly GenerationTargetEstimator.Options _options;
    private readonly ClipTextEncoder _encoder;
    private readonly ClipTokenizer _tokenizer;
    private readonly string _keyPrefix;
    private long _encoded, _hits;

    internal GenerationTargetTransformer(MLContext context, GenerationTargetEstimator.Options options)
        : base(context, GenerationTargetEstimator.Stage, options.BatchSize)
    {
        _options = options.Clone();
        _options.Validate();
        TextEncoderFolder = Path.GetFullPath(_options.TextEncoderFolder);
        TokenizerFolder = Path.GetFullPath(_options.TokenizerFolder ?? _options.TextEncoderFolder);
        _encoder = ClipTextEncoder.Load(TextEncoderFolder, new ClipLoadOptions { DType = _options.DType, Device = GillLanguageBackbone.ResolveDevice(context) });
        try
        {
            SequenceLength = _options.SequenceLength ?? _encoder.Config.MaxPositionEmbeddings;
            if (SequenceLength > _encoder.Config.MaxPositionEmbeddings)
                throw new ArgumentOutOfRangeException(nameof(options), SequenceLength, $"SequenceLength {SequenceLength} exceeds the text encoder's max_position_embeddings ({_encoder.Config.MaxPositionEmbeddings}).");
            _tokenizer = ClipTokenizer.FromFolder(TokenizerFolder, new ClipTokenizerOptions { ModelMaxLength = SequenceLength });
            if (_tokenizer.VocabularySize > _encoder.Config.VocabSize)
                throw new InvalidDataException($"The tokenizer in '{TokenizerFolder}' has {_tokenizer.VocabularySize} tokens, more than the text encoder's vocabulary ({_encoder.Config.VocabSize}).");
            HiddenSize = _encoder.Config.HiddenSize;
            var encoderHash = GillModelFile.HashPath(TextEncoderFolder).Hash;
            var tokenizerHash = GillModelFile.HashPath(TokenizerFolder).Hash;
            _keyPrefix = $"gill-generation-target-v1\n{encoderHash}\n{tokenizerHash}\n{SequenceLength}\n{_options.DType}\n";
        }
        catch
        {
            _encoder.Dispose();
            throw;
        }
        InputColumns = new[] { GillColumn.Text(_options.InputColumnName) };
        OutputColumns = new[] { GillColumn.FloatVector(_options.OutputColumnName, SequenceLength, HiddenSize) };
    }

    /// <summary>L.</summary>
    public int SequenceLength { get; }

    /// <summary>m: the text encoder's hidden size.</summary>
    public int HiddenSize { get; }

    /// <summary>The text encoder folder.</summary>
    public string TextEncoderFolder { get; }

    /// <summary>The tokenizer folder.</summary>
    public string TokenizerFolder { get; }

    /// <summary>The cache folder, or null.</summary>
    public string? CacheFolder => _options.CacheFolder;

    /// <summary>Captions run through the text encoder so far (cache misses).</summary>
    public long EncodedCaptions => Interlocked.Read(ref _encoded);

    /// <summary>Captions served from the cache so far.</summary>
    public long CacheHits => Interlocked.Read(ref _hits);

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> InputColumns { get; }

    /// <inheritdoc />
    public override IReadOnlyList<GillColumn> OutputColumns { get; }

    /// <summary>The cache key of a caption: SHA-256 over the encoder and tokenizer hashes, L, dtype and the caption.</summary>
    public string CacheKey(string caption) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(_keyPrefix + caption)));

    private string CachePath(string key) => Path.Combine(_options.CacheFolder!, key[..2], key + ".f32");

    /// <inheritdoc />
    protected override void ProcessBatch(MLNet.GillBatch batch)
    {
        var captions = batch.GetTexts(_options.InputColumnName);
        int size = SequenceLength * HiddenSize;
        var output = batch.GetOutputFloats(_options.OutputColumnName);
        var missing = new List<int>();
        var keys = new string?[captions.Count];
        for (int i = 0; i < captions.Count; i++)
        {
            if (_options.CacheFolder is null) { missing.Add(i); continue; }
            keys[i] = CacheKey(captions[i] ?? "");
            if (TryReadCache(CachePath(keys[i]!), output.Slice(i * size, size))) Interlocked.Increment(ref _hits);
            else missing.Add(i);
        }
        if (missing.Count == 0) return;
        var encoded = _tokenizer.EncodeBatch(missing.Select(i => captions[i] ?? "").ToArray(), new BatchEncodingOptions
        {
            Padding = PaddingStrategy.MaxLength,
            MaxLength = SequenceLength,
            Truncation = true,
        });
        var hidden = _encoder.GetLastHiddenState(encoded.InputIdsTensor(_encoder.Device));
        using var cpu = hidden.to(ScalarType.Float32).cpu().contiguous();
        var values = cpu.data<float>().ToArray();
        Interlocked.Add(ref _encoded, missing.Count);
        for (int j = 0; j < missing.Count; j++)
        {
            var slice = values.AsSpan(j * size, size);
            slice.CopyTo(output.Slice(missing[j] * size, size));
            if (keys[missing[j]] is { } key) WriteCache(CachePath(key), slice);
        }
    }

    private bool TryReadCache(string path, Span<float> destination)
    {
        if (!File.Exists(path)) return false;
        var bytes = File.ReadAllBytes(path);
        int header = Magic.Length + 8;
        if (bytes.Length != header + destination.Length * sizeof(float) || !bytes.AsSpan(0, Magic.Length).SequenceEqual(Magic)
            || BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(Magic.Length)) != SequenceLength
            || BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(Magic.Length + 4)) != HiddenSize)
            return false;
        var src = bytes.AsSpan(header);
        for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadSingleLittleEndian(src.Slice(i * 4));
        return true;
    }

    private void WriteCache(string path, ReadOnlySpan<float> values)
    {
        var bytes = new byte[Magic.Length + 8 + values.Length * sizeof(float)];
        Magic.CopyTo(bytes, 0);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(Magic.Length), SequenceLength);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(Magic.Length + 4), HiddenSize);
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(Magic.Length + 8 + i * 4), values[i]);
        Serialization.AtomicFile.WriteAllBytes(path, bytes);
    }

    /// <inheritdoc />
    public int FormatVersion => 1;

    private sealed record Saved(
        [property: JsonPropertyName("inputColumnName")] string InputColumnName,
        [property: JsonPropertyName("outputColumnName")] string OutputColumnName,
        [property: JsonPropertyName("sequenceLength")] int SequenceLength,
        [property: JsonPropertyName("cacheFolder")] string? CacheFolder,
        [property: JsonPropertyName("batchSize")] int BatchSize,
        [property: JsonPropertyName("dtype")] ScalarType DType);

    /// <inheritdoc />
    public void SaveTo(GillModelWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.SetOptions("stage", new Saved(_options.InputColumnName, _options.OutputColumnName, SequenceLength, _options.CacheFolder, BatchSize, _options.DType));
        writer.AddBackbone("text-encoder", TextEncoderFolder);
        if (TokenizerFolder != TextEncoderFolder) writer.AddBackbone("clip-tokenizer", TokenizerFolder);
    }

    internal static GenerationTargetTransformer LoadFrom(GillModelReader reader)
    {
        if (reader.FormatVersion != 1) throw new InvalidDataException($"{reader.StageFolder}: GenerationTargets format version {reader.FormatVersion} is not supported (expected 1).");
        var o = reader.GetOptions<Saved>("stage");
        var encoder = reader.ResolveBackbone("text-encoder");
        var tokenizer = reader.Backbones.Any(b => b.Name == "clip-tokenizer") ? reader.ResolveBackbone("clip-tokenizer") : encoder;
        return new GenerationTargetTransformer(reader.Context, new GenerationTargetEstimator.Options
        {
            TextEncoderFolder = encoder,
            TokenizerFolder = tokenizer,
            SequenceLength = o.SequenceLength,
            CacheFolder = o.CacheFolder,
            InputColumnName = o.InputColumnName,
            OutputColumnName = o.OutputColumnName,
            BatchSize = o.BatchSize,
            DType = o.DType,
        });
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing && !IsDisposed) _encoder.Dispose();
        base.Dispose(disposing);
    }
}
