using System.Text.Json;
using System.Text.Json.Nodes;
using Gill.ML.Generation;
using Gill.ML.Modules.Clip;
using Gill.ML.Serialization;
using Gill.ML.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.WorldModels;

/// <summary>
/// The shapes world's text-to-image generator: the deterministic <see cref="TextToImageDecoder"/> conditioned on the
/// frozen world CLIP text tower's hidden-state sequence [B, L, m]. One forward pass per image (no sampling steps, so
/// seeds, guidance and scheduler options have no effect). With the text tower loaded it also draws from text prompts
/// (the "text-to-image baseline" of GILL's tables).
/// </summary>
public sealed class WorldImageGenerator : IImageGenerator
{
    /// <summary>File in the generator folder naming the text tower folder (relative path) it was trained with.</summary>
    public const string LinkFileName = "world_generator.json";

    private readonly TextToImageDecoder _decoder;
    private readonly ClipTextEncoder? _text;
    private readonly ClipTokenizer? _tokenizer;
    private readonly Device _device;
    private bool _disposed;

    private WorldImageGenerator(TextToImageDecoder decoder, ClipTextEncoder? text, ClipTokenizer? tokenizer, Device device)
    {
        _decoder = decoder;
        _text = text;
        _tokenizer = tokenizer;
        _device = device;
    }

    /// <summary>
    /// Loads a generator folder (config.json + model.safetensors of the decoder). The text tower comes from
    /// <paramref name="textEncoderFolder"/>, else from the folder named in <see cref="LinkFileName"/>, else none
    /// (then only <see cref="Generate(Tensor, ImageGenerationOptions?, IProgress{ImageGenerationProgress}?, CancellationToken)"/> works).
    /// </summary>
    /// <exception cref="InvalidDataException">The text tower's sequence shape differs from the decoder's conditioning shape.</exception>
    public static WorldImageGenerator Load(string folder, string? textEncoderFolder = null, Device? device = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        folder = Path.GetFullPath(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"World generator folder '{folder}' does not exist.");
        device ??= CPU;
        if (textEncoderFolder is null && File.Exists(Path.Combine(folder, LinkFileName)))
        {
            var link = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, LinkFileName)))?["text_encoder"]?.GetValue<string>();
            if (link is not null)
            {
                var candidate = Path.GetFullPath(Path.Combine(folder, link));
                if (Directory.Exists(candidate)) textEncoderFolder = candidate;
            }
        }
        var decoder = TextToImageDecoder.LoadFolder(folder, device);
        ClipTextEncoder? text = null;
        ClipTokenizer? tokenizer = null;
        try
        {
            if (textEncoderFolder is not null)
            {
                text = ClipTextEncoder.Load(textEncoderFolder, new ClipLoadOptions { Device = device });
                tokenizer = ClipTokenizer.FromFolder(textEncoderFolder);
                var c = decoder.Config;
                if (text.Config.MaxPositionEmbeddings != c.CondTokens || text.Config.HiddenSize != c.CondDim)
                    throw new InvalidDataException($"Text tower '{textEncoderFolder}' gives sequences [{text.Config.MaxPositionEmbeddings}, {text.Config.HiddenSize}] but the decoder in '{folder}' is conditioned on [{c.CondTokens}, {c.CondDim}].");
            }
            return new WorldImageGenerator(decoder, text, tokenizer, device);
        }
        catch
        {
            text?.Dispose();
            decoder.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public ConditioningShape ConditioningShape => new(_decoder.Config.CondTokens, _decoder.Config.CondDim);

    /// <summary>Image side in pixels.</summary>
    public int ImageSize => _decoder.Config.ImageSize;

    /// <summary>True when a text tower is loaded (prompts can be given as text).</summary>
    public bool HasTextEncoder => _text is not null;

    /// <summary>The text tower's hidden-state sequences [B, L, m] for <paramref name="prompts"/> (CPU, no gradients).</summary>
    /// <exception cref="InvalidOperationException">No text tower is loaded.</exception>
    public Tensor EncodePrompts(IReadOnlyList<string> prompts)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(prompts);
        if (_text is null || _tokenizer is null)
            throw new InvalidOperationException("This world generator was loaded without a text tower; pass textEncoderFolder to Load to draw from text.");
        return EncodeCaptions(_text, _tokenizer, prompts);
    }

    /// <summary>Draws one image per text prompt.</summary>
    public GeneratedImages GenerateFromText(IReadOnlyList<string> prompts, CancellationToken cancellationToken = default)
    {
        using var cond = EncodePrompts(prompts);
        return Generate(cond, null, null, cancellationToken);
    }

    /// <inheritdoc />
    public GeneratedImages Generate(Tensor promptEmbeddings, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(promptEmbeddings);
        var shape = ConditioningShape;
        if (promptEmbeddings.dim() != 3 || promptEmbeddings.shape[1] != shape.SequenceLength || promptEmbeddings.shape[2] != shape.EmbeddingDim)
            throw new ArgumentException($"Prompt embeddings must have shape [B, {shape.SequenceLength}, {shape.EmbeddingDim}], got {SafeTensors.FormatShape(promptEmbeddings.shape)}.", nameof(promptEmbeddings));
        if (options?.Height is int h && h != ImageSize || options?.Width is int w && w != ImageSize)
            throw new ArgumentException($"The world generator draws {ImageSize}×{ImageSize} images; Height/Width {options.Height}×{options.Width} were requested.", nameof(options));
        cancellationToken.ThrowIfCancellationRequested();
        using var cond = promptEmbeddings.to(ScalarType.Float32);
        var images = TextToImageDecoderTrainer.Generate(_decoder, cond);
        progress?.Report(new ImageGenerationProgress(1, 1, 0));
        return new GeneratedImages(images, null, [], null);
    }

    /// <inheritdoc />
    public GeneratedImages Generate(float[] promptEmbeddings, long[] shape, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(promptEmbeddings);
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Length != 3 || shape.Aggregate(1L, (a, b) => a * b) != promptEmbeddings.LongLength)
            throw new ArgumentException($"Shape [{string.Join(", ", shape)}] does not describe {promptEmbeddings.Length} values as [B, L, m].", nameof(shape));
        using var t = torch.tensor(promptEmbeddings, shape);
        return Generate(t, options, progress, cancellationToken);
    }

    /// <summary>Hidden states [N, L, m] of captions padded/truncated to the tower's L, in batches, on the CPU.</summary>
    internal static Tensor EncodeCaptions(ClipTextEncoder text, ClipTokenizer tokenizer, IReadOnlyList<string> captions, int batchSize = 256)
    {
        int l = text.Config.MaxPositionEmbeddings;
        using var ids = tokenizer.EncodeBatch(captions, new BatchEncodingOptions { Padding = PaddingStrategy.MaxLength, MaxLength = l, Truncation = true }).InputIdsTensor();
        using var noGrad = torch.no_grad();
        var parts = new List<Tensor>();
        for (long i = 0; i < ids.shape[0]; i += batchSize)
        {
            using var scope = torch.NewDisposeScope();
            var h = text.GetLastHiddenState(ids.narrow(0, i, Math.Min(batchSize, ids.shape[0] - i)).to(text.Device));
            parts.Add(h.cpu().MoveToOuterDisposeScope());
        }
        var result = torch.cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return result;
    }

    /// <summary>Writes <see cref="LinkFileName"/> into a generator folder.</summary>
    internal static void WriteLink(string generatorFolder, string textEncoderFolder)
    {
        var rel = Path.GetRelativePath(generatorFolder, textEncoderFolder);
        AtomicFile.WriteAllText(Path.Combine(generatorFolder, LinkFileName), new JsonObject { ["text_encoder"] = rel }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _text?.Dispose();
        _decoder.Dispose();
    }
}
