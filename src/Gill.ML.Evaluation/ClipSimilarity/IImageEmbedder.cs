using static TorchSharp.torch;

namespace Gill.ML.Evaluation;

/// <summary>
/// An image encoder for CLIP similarity. GILL's evaluation uses the <b>projected CLIP image embedding</b>
/// (<c>CLIPModel.get_image_features</c>: the pooled class token after <c>post_layernorm</c>, multiplied by
/// <c>visual_projection</c>; 768-d for ViT-L/14). That is not the <b>pooled feature</b> (<c>pooler_output</c>, 1024-d
/// for ViT-L/14) that GILL feeds to its visual prefix: an embedder that returns pooled features gives different, and
/// not comparable, similarity values.
/// </summary>
public interface IImageEmbedder
{
    /// <summary>
    /// Embeds a batch of RGB images. Each tensor is <c>[3, H, W]</c>, float32 in [0, 1] (sizes may differ); the embedder
    /// applies its own resizing and normalisation. Returns <c>[N, D]</c> (any float dtype, any device).
    /// </summary>
    Tensor Embed(IReadOnlyList<Tensor> images);
}

/// <summary>An <see cref="IImageEmbedder"/> from a delegate, e.g. a CLIP vision tower's projected-embedding call.</summary>
public sealed class DelegateImageEmbedder : IImageEmbedder
{
    private readonly Func<IReadOnlyList<Tensor>, Tensor> _embed;

    /// <summary>Wraps <paramref name="embed"/>.</summary>
    public DelegateImageEmbedder(Func<IReadOnlyList<Tensor>, Tensor> embed) => _embed = embed ?? throw new ArgumentNullException(nameof(embed));

    /// <inheritdoc />
    public Tensor Embed(IReadOnlyList<Tensor> images) => _embed(images);
}
