using Gill.ML.Generation;
using Gill.ML.WorldModels;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Inference;

/// <summary>
/// The shapes world's <see cref="TextToImageDecoder"/> as an <see cref="IImageGenerator"/>: conditioning [B, L, m] in,
/// images [B, 3, H, W] in [0, 1] out, in one deterministic forward pass (seeds, steps and guidance do not apply).
/// </summary>
public sealed class WorldDecoderImageGenerator : IImageGenerator
{
    private readonly bool _owns;

    /// <summary>Wraps a decoder.</summary>
    /// <param name="decoder">The decoder.</param>
    /// <param name="ownsDecoder">Whether <see cref="Dispose"/> disposes it.</param>
    internal WorldDecoderImageGenerator(TextToImageDecoder decoder, bool ownsDecoder = false)
    {
        Decoder = decoder ?? throw new ArgumentNullException(nameof(decoder));
        _owns = ownsDecoder;
    }

    /// <summary>Loads a decoder folder (<see cref="TextToImageDecoder.SaveFolder"/>) and wraps it.</summary>
    public static WorldDecoderImageGenerator Load(string folder, Device? device = null) => new(TextToImageDecoder.LoadFolder(folder, device), ownsDecoder: true);

    /// <summary>The wrapped decoder.</summary>
    internal TextToImageDecoder Decoder { get; }

    /// <inheritdoc />
    public ConditioningShape ConditioningShape => new(Decoder.Config.CondTokens, Decoder.Config.CondDim);

    /// <inheritdoc />
    public GeneratedImages Generate(Tensor promptEmbeddings, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(promptEmbeddings);
        var shape = ConditioningShape;
        if (promptEmbeddings.dim() != 3 || promptEmbeddings.shape[1] != shape.SequenceLength || promptEmbeddings.shape[2] != shape.EmbeddingDim)
            throw new ArgumentException($"Prompt embeddings must be [B, {shape.SequenceLength}, {shape.EmbeddingDim}], got {Serialization.SafeTensors.FormatShape(promptEmbeddings.shape)}.", nameof(promptEmbeddings));
        cancellationToken.ThrowIfCancellationRequested();
        using var scope = torch.NewDisposeScope();
        var images = TextToImageDecoderTrainer.Generate(Decoder, promptEmbeddings.detach().to(ScalarType.Float32)).to(ScalarType.Float32).cpu();
        progress?.Report(new ImageGenerationProgress(1, 1, 0));
        return new GeneratedImages(images.MoveToOuterDisposeScope(), null, Array.Empty<long>(), null);
    }

    /// <inheritdoc />
    public GeneratedImages Generate(float[] promptEmbeddings, long[] shape, ImageGenerationOptions? options = null,
        IProgress<ImageGenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        using var t = torch.tensor(promptEmbeddings, shape);
        return Generate(t, options, progress, cancellationToken);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_owns) Decoder.Dispose();
    }
}
