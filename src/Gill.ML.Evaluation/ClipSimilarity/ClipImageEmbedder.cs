using Gill.ML.Imaging;
using Gill.ML.Modules.Clip;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation.ClipSimilarity;

/// <summary>
/// The image embedder of GILL's CLIP-similarity numbers: a CLIP vision tower's <b>projected</b> image embedding
/// (<c>get_image_features</c> / <c>image_embeds</c>), with CLIPImageProcessor-identical preprocessing. Images arrive as
/// [3, H, W] floats in [0, 1] and are quantised to 8 bits first, as when they are saved to and read from PNG files.
/// </summary>
public sealed class ClipImageEmbedder : IImageEmbedder, IDisposable
{
    private readonly ClipVisionEncoder _vision;
    private readonly bool _owns;

    /// <summary>Wraps a loaded vision encoder, which must have a visual projection.</summary>
    public ClipImageEmbedder(ClipVisionEncoder vision, bool ownsEncoder = false)
    {
        _vision = vision ?? throw new ArgumentNullException(nameof(vision));
        _owns = ownsEncoder;
    }

    /// <summary>Loads the vision tower (and its preprocessing) from a CLIP checkpoint folder.</summary>
    public static ClipImageEmbedder Load(string checkpointFolder, ClipLoadOptions? options = null) =>
        new(ClipVisionEncoder.Load(checkpointFolder, options), ownsEncoder: true);

    /// <inheritdoc />
    public Tensor Embed(IReadOnlyList<Tensor> images)
    {
        var rgb = new List<RgbImage>(images.Count);
        for (int i = 0; i < images.Count; i++)
        {
            var t = images[i];
            if (t.dim() != 3 || t.shape[0] != 3)
                throw new ArgumentException($"Image {i} must be [3, H, W] in [0, 1], got [{string.Join(", ", t.shape)}].", nameof(images));
            using var scope = torch.NewDisposeScope();
            var hwc = (t.detach().to(ScalarType.Float32).cpu().clamp(0, 1) * 255).round().to(ScalarType.Byte).permute(1, 2, 0).contiguous();
            rgb.Add(new RgbImage((int)t.shape[2], (int)t.shape[1], hwc.bytes));
        }
        using var noGrad = torch.no_grad();
        using var pixels = _vision.Preprocessor.Preprocess(rgb, _vision.DType, _vision.Device);
        using var output = _vision.Forward(pixels);
        if (output.ImageEmbeddings is null)
            throw new InvalidOperationException("This CLIP vision checkpoint has no visual_projection, so it has no projected image embedding (CLIP similarity needs one).");
        return output.ImageEmbeddings.detach().cpu().clone();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_owns) _vision.Dispose();
    }
}
