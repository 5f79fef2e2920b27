using System.Runtime.CompilerServices;
using System.Text.Json.Serialization;
using Gill.ML.Imaging;
using Gill.ML.Modules;
using Gill.ML.Modules.Clip;
using Gill.ML.Persistence;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Stages.VisualFeatures;

/// <summary>
/// CLIP's vision tower as a frozen <see cref="IVisualEncoder"/>: the feature is HF <c>pooler_output</c> (the
/// post-LayerNorm class token, what GILL's mappings read: 1024-d for ViT-L/14) and the optional embedding is the
/// projected <c>image_embeds</c> (the CLIP-similarity space: 768-d for ViT-L/14). Preprocessing is
/// <see cref="ClipImageProcessor"/> (the checkpoint folder's <c>preprocessor_config.json</c> when present).
/// Saved models record the checkpoint folder by path and SHA-256; a model that uses it reloads it.
/// </summary>
public sealed class ClipVisualEncoder : IPersistableVisualEncoder, IDisposable
{
    /// <summary>The encoder kind written into saved models.</summary>
    public const string Kind = "clip-vision";

    private readonly ClipVisionEncoder _encoder;
    private bool _disposed;

    [ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255", Justification = "Registers the loader of a built-in encoder kind so saved models reload without setup.")]
    internal static void RegisterLoader() => VisualEncoderRegistry.Register(Kind, LoadFrom);

    /// <summary>Loads the vision tower from a Hugging Face folder (<c>clip_vision_model</c> or full <c>clip</c> checkpoint).</summary>
    /// <param name="folder">The checkpoint folder.</param>
    /// <param name="options">Device and element type.</param>
    /// <param name="name">Name for messages (default: the folder name).</param>
    public ClipVisualEncoder(string folder, ClipLoadOptions? options = null, string? name = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        Folder = Path.GetFullPath(folder);
        LoadOptions = options ?? new ClipLoadOptions();
        _encoder = ClipVisionEncoder.Load(Folder, LoadOptions);
        Name = name ?? Path.GetFileName(Folder.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));
    }

    /// <summary>The checkpoint folder.</summary>
    public string Folder { get; }

    /// <summary>Device and element type used to load it.</summary>
    public ClipLoadOptions LoadOptions { get; }

    /// <summary>The underlying CLIP vision encoder.</summary>
    public ClipVisionEncoder Encoder => _encoder;

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public int FeatureSize => _encoder.PooledFeatureSize;

    /// <inheritdoc />
    public int EmbeddingSize => _encoder.EmbeddingSize ?? 0;

    string IPersistableVisualEncoder.EncoderKind => Kind;

    /// <summary>Number of batched forward calls made so far.</summary>
    public long ForwardCalls => Interlocked.Read(ref _calls);
    private long _calls;

    /// <inheritdoc />
    public VisualEncoding Encode(IReadOnlyList<SKBitmap> images, bool includeEmbedding)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(images);
        if (includeEmbedding && EmbeddingSize == 0)
            throw new InvalidOperationException($"The CLIP checkpoint '{Folder}' has no visual_projection, so it gives no image embeddings.");
        int n = images.Count;
        if (n == 0) return new VisualEncoding(0, FeatureSize, Array.Empty<float>(), EmbeddingSize, includeEmbedding ? Array.Empty<float>() : null);
        var rgb = new RgbImage[n];
        for (int i = 0; i < n; i++) rgb[i] = ToRgb(images[i], i);
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var pixels = _encoder.Preprocessor.Preprocess(rgb, _encoder.DType, _encoder.Device);
        using var output = _encoder.Forward(pixels);
        Interlocked.Increment(ref _calls);
        var features = ToArray(output.PooledFeatures);
        float[]? embeddings = includeEmbedding ? ToArray(output.ImageEmbeddings!) : null;
        return new VisualEncoding(n, FeatureSize, features, EmbeddingSize, embeddings);
    }

    private static float[] ToArray(Tensor t)
    {
        using var cpu = t.detach().to(ScalarType.Float32).cpu().contiguous();
        return cpu.data<float>().ToArray();
    }

    /// <summary>Copies an 8-bit 4-channel bitmap (BGRA or RGBA; alpha dropped) into an RGB image.</summary>
    internal static RgbImage ToRgb(SKBitmap bitmap, int index)
    {
        ArgumentNullException.ThrowIfNull(bitmap);
        var (r, b) = bitmap.ColorType switch
        {
            SKColorType.Bgra8888 => (2, 0),
            SKColorType.Rgba8888 => (0, 2),
            _ => (-1, -1),
        };
        if (r < 0)
        {
            using var converted = new SKBitmap(new SKImageInfo(bitmap.Width, bitmap.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
            if (!bitmap.CopyTo(converted, SKColorType.Rgba8888))
                throw new InvalidDataException($"Image {index} has colour type {bitmap.ColorType}, which cannot be converted to RGBA.");
            return ToRgb(converted, index);
        }
        int w = bitmap.Width, h = bitmap.Height;
        var px = bitmap.GetPixelSpan();
        int rowBytes = bitmap.RowBytes;
        var rgb = new byte[(long)w * h * 3];
        for (int y = 0; y < h; y++)
        {
            var row = px.Slice(y * rowBytes, w * 4);
            for (int x = 0, j = y * w * 3; x < w; x++, j += 3)
            {
                rgb[j] = row[x * 4 + r];
                rgb[j + 1] = row[x * 4 + 1];
                rgb[j + 2] = row[x * 4 + b];
            }
        }
        return new RgbImage(w, h, rgb);
    }

    private sealed record SavedOptions(
        [property: JsonPropertyName("name")] string Name,
        [property: JsonPropertyName("dtype")] ScalarType DType);

    /// <inheritdoc />
    public void SaveTo(GillModelWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.SetOptions("clipEncoder", new SavedOptions(Name, LoadOptions.DType));
        writer.AddBackbone("clip-vision", Folder);
    }

    internal static IVisualEncoder LoadFrom(GillModelReader reader)
    {
        var o = reader.GetOptions<SavedOptions>("clipEncoder");
        var folder = reader.ResolveBackbone("clip-vision");
        return new ClipVisualEncoder(folder, new ClipLoadOptions { DType = o.DType, Device = GillLanguageBackbone.ResolveDevice(reader.Context) }, o.Name);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _encoder.Dispose();
    }
}
