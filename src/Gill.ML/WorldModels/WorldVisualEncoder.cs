using System.Runtime.CompilerServices;
using System.Text.Json.Serialization;
using Gill.ML.Persistence;
using Gill.ML.Stages.VisualFeatures;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.WorldModels;

/// <summary>
/// The shapes world's pretrained CNN image tower as a frozen <see cref="IVisualEncoder"/>: the feature is the pooled
/// output (as CLIP's pooler_output), the embedding the projected contrastive embedding (as CLIP's image_embeds).
/// Images are stretched to the tower's input size. Saved models refer to the encoder folder by path and SHA-256.
/// </summary>
public sealed class WorldVisualEncoder : IPersistableVisualEncoder, IDisposable
{
    /// <summary>The <see cref="IPersistableVisualEncoder.EncoderKind"/> of this encoder.</summary>
    public const string Kind = "gill-world-image-encoder";

    private const string BackboneName = "world-image-encoder";
    private readonly WorldImageEncoder _model;
    private readonly ImagePreprocessor _preprocessor;
    private readonly Device _device;
    private readonly object _lock = new();
    private bool _disposed;

#pragma warning disable CA2255 // The loader must be known before any saved model that uses it is read.
    [ModuleInitializer]
    internal static void RegisterLoader() => VisualEncoderRegistry.Register(Kind, LoadFrom);
#pragma warning restore CA2255

    private WorldVisualEncoder(WorldImageEncoder model, string folder, Device device)
    {
        _model = model;
        _device = device;
        Folder = folder;
        int s = model.Config.ImageSize;
        _preprocessor = new ImagePreprocessor { Width = s, Height = s, ResizeMode = ImageResizeMode.Stretch, Scale = 1f / 255f };
    }

    /// <summary>Loads the image tower saved in <paramref name="folder"/> (config.json + model.safetensors).</summary>
    /// <param name="folder">The folder written by the world pretraining (image-encoder).</param>
    /// <param name="device">Torch device (default CPU).</param>
    public static WorldVisualEncoder Load(string folder, Device? device = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        var full = Path.GetFullPath(folder);
        if (!Directory.Exists(full)) throw new DirectoryNotFoundException($"World image encoder folder '{full}' does not exist.");
        device ??= CPU;
        return new WorldVisualEncoder(WorldImageEncoder.LoadFolder(full, device), full, device);
    }

    /// <summary>The folder the encoder was loaded from.</summary>
    public string Folder { get; }

    /// <inheritdoc />
    public string Name => "gill-world-cnn";

    /// <inheritdoc />
    public int FeatureSize => _model.Config.HiddenSize;

    /// <inheritdoc />
    public int EmbeddingSize => _model.Config.ProjectionDim;

    /// <summary>Input side in pixels.</summary>
    public int ImageSize => _model.Config.ImageSize;

    string IPersistableVisualEncoder.EncoderKind => Kind;

    /// <inheritdoc />
    public VisualEncoding Encode(IReadOnlyList<SKBitmap> images, bool includeEmbedding)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(images);
        int n = images.Count;
        if (n == 0) return new VisualEncoding(0, FeatureSize, [], EmbeddingSize, includeEmbedding ? [] : null);
        var pixels = _preprocessor.Process(images);
        lock (_lock)
        {
            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            var x = torch.tensor(pixels, [n, 3, ImageSize, ImageSize]).to(_device);
            var (pooled, embeds) = _model.forward(x);
            var features = pooled.cpu().contiguous().data<float>().ToArray();
            float[]? emb = includeEmbedding ? embeds.cpu().contiguous().data<float>().ToArray() : null;
            return new VisualEncoding(n, FeatureSize, features, EmbeddingSize, emb);
        }
    }

    /// <summary>Pooled features and projected embeddings of RGB images [B, 3, S, S] in [0, 1] (no gradients).</summary>
    public (Tensor Features, Tensor Embeddings) Encode(Tensor images)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_lock)
        {
            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            var (p, e) = _model.forward(images.to(_device));
            return (p.MoveToOuterDisposeScope(), e.MoveToOuterDisposeScope());
        }
    }

    internal sealed record SavedOptions([property: JsonPropertyName("name")] string Name);

    /// <inheritdoc />
    public void SaveTo(GillModelWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.SetOptions("encoder", new SavedOptions(Name));
        writer.AddBackbone(BackboneName, Folder);
    }

    internal static IVisualEncoder LoadFrom(GillModelReader reader) => Load(reader.ResolveBackbone(BackboneName));

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _model.Dispose();
    }
}
