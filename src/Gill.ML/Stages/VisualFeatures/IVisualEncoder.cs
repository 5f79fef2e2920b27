using Gill.ML.Persistence;
using SkiaSharp;

namespace Gill.ML.Stages.VisualFeatures;

/// <summary>
/// A frozen image encoder: decoded images in, one feature vector per image out (and optionally a projected embedding,
/// e.g. CLIP's pooled output and its projected image embedding). The encoder does its own preprocessing (resize, crop,
/// normalisation); <see cref="ImagePreprocessor"/> implements the usual steps.
/// </summary>
public interface IVisualEncoder
{
    /// <summary>A short name for messages and saved models (e.g. "ResNet18", "clip-vit-large-patch14").</summary>
    string Name { get; }

    /// <summary>Length <c>D</c> of the feature vector of one image.</summary>
    int FeatureSize { get; }

    /// <summary>Length <c>E</c> of the projected embedding, or 0 when the encoder has none.</summary>
    int EmbeddingSize { get; }

    /// <summary>
    /// Encodes a batch of images in one call. Images are 8-bit, 4-channel <see cref="SKBitmap"/>s (BGRA or RGBA, any
    /// size) owned by the caller.
    /// </summary>
    /// <param name="images">The batch.</param>
    /// <param name="includeEmbedding">Also compute the projected embedding (only when <see cref="EmbeddingSize"/> &gt; 0).</param>
    VisualEncoding Encode(IReadOnlyList<SKBitmap> images, bool includeEmbedding);
}

/// <summary>An <see cref="IVisualEncoder"/> that can be written into a Gill model file and rebuilt on load.</summary>
public interface IPersistableVisualEncoder : IVisualEncoder
{
    /// <summary>Key of the loader registered with <see cref="VisualEncoderRegistry.Register"/>.</summary>
    string EncoderKind { get; }

    /// <summary>Writes the encoder's options and backbone references (not the frozen weights themselves).</summary>
    void SaveTo(GillModelWriter writer);
}

/// <summary>The result of <see cref="IVisualEncoder.Encode"/>: row-major <c>[B, D]</c> features and optional <c>[B, E]</c> embeddings.</summary>
public sealed class VisualEncoding
{
    /// <summary>Wraps the arrays (not copied).</summary>
    public VisualEncoding(int count, int featureSize, float[] features, int embeddingSize = 0, float[]? embeddings = null)
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.LongLength != (long)count * featureSize)
            throw new ArgumentException($"Features hold {features.Length} values, expected {count} × {featureSize}.", nameof(features));
        if (embeddings is not null && embeddings.LongLength != (long)count * embeddingSize)
            throw new ArgumentException($"Embeddings hold {embeddings.Length} values, expected {count} × {embeddingSize}.", nameof(embeddings));
        Count = count;
        FeatureSize = featureSize;
        Features = features;
        EmbeddingSize = embeddings is null ? 0 : embeddingSize;
        Embeddings = embeddings;
    }

    /// <summary>Number of images.</summary>
    public int Count { get; }

    /// <summary>Feature length D.</summary>
    public int FeatureSize { get; }

    /// <summary>Features, <c>Count × FeatureSize</c>, row-major.</summary>
    public float[] Features { get; }

    /// <summary>Embedding length E (0 when not computed).</summary>
    public int EmbeddingSize { get; }

    /// <summary>Embeddings, <c>Count × EmbeddingSize</c>, or null.</summary>
    public float[]? Embeddings { get; }
}

/// <summary>Loaders of persisted visual encoders, by <see cref="IPersistableVisualEncoder.EncoderKind"/>.</summary>
public static class VisualEncoderRegistry
{
    private static readonly Dictionary<string, Func<GillModelReader, IVisualEncoder>> Loaders = new(StringComparer.Ordinal)
    {
        [OnnxVisualEncoder.Kind] = OnnxVisualEncoder.LoadFrom,
    };

    /// <summary>Registers (or replaces) the loader of an encoder kind.</summary>
    public static void Register(string encoderKind, Func<GillModelReader, IVisualEncoder> loader)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(encoderKind);
        ArgumentNullException.ThrowIfNull(loader);
        lock (Loaders) Loaders[encoderKind] = loader;
    }

    internal static IVisualEncoder Load(string encoderKind, GillModelReader reader)
    {
        Func<GillModelReader, IVisualEncoder>? loader;
        lock (Loaders) Loaders.TryGetValue(encoderKind, out loader);
        if (loader is null)
            throw new InvalidDataException($"The saved model uses a visual encoder of kind '{encoderKind}', which is not registered. " +
                $"Register its loader with VisualEncoderRegistry.Register(\"{encoderKind}\", ...) before loading. Known kinds: {string.Join(", ", Loaders.Keys)}.");
        return loader(reader);
    }
}
