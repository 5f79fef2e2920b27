using Gill.ML.Stages.VisualFeatures;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation;

/// <summary>
/// The embedded default image features of the evaluation: the 512-d average-pooled output of the ImageNet ResNet-18
/// that ships with ML.NET's DnnImageFeaturizer (<see cref="OnnxVisualEncoder.ResNet18"/>). Used where the FID
/// Inception, LPIPS trunk or CLIP weights are absent. Numbers computed on these features are <b>not comparable</b> to
/// published FID, LPIPS or CLIP-similarity values; every metrics object built on them carries <see cref="Backbone"/>.
/// </summary>
public sealed class ResNet18Features : IImageEmbedder, IDisposable
{
    /// <summary>The label every metric computed on these features carries.</summary>
    public const string Backbone = "ResNet-18 ImageNet features (embedded default; not comparable to published FID/LPIPS)";

    private readonly IVisualEncoder _encoder;
    private readonly bool _owns;

    /// <summary>Wraps a visual encoder (normally <see cref="OnnxVisualEncoder.ResNet18"/>).</summary>
    /// <param name="encoder">The encoder; its <see cref="IVisualEncoder.FeatureSize"/> is the feature dimension.</param>
    /// <param name="ownsEncoder">Dispose the encoder with this object.</param>
    public ResNet18Features(IVisualEncoder encoder, bool ownsEncoder = false)
    {
        _encoder = encoder ?? throw new ArgumentNullException(nameof(encoder));
        _owns = ownsEncoder;
    }

    /// <summary>
    /// Opens the ResNet-18 of the DnnImageFeaturizer package. <paramref name="modelsFolder"/> is its <c>DnnImageModels</c>
    /// folder; by default the one beside the application, else the one beside Gill.ML.dll (as in a notebook that
    /// references a build output).
    /// </summary>
    /// <exception cref="FileNotFoundException">The ONNX files are not in <paramref name="modelsFolder"/>.</exception>
    public static ResNet18Features Load(string? modelsFolder = null) => new(OnnxVisualEncoder.ResNet18(modelsFolder ?? DefaultModelsFolder()), ownsEncoder: true);

    /// <summary>The <c>DnnImageModels</c> folder beside the application, else beside Gill.ML.dll.</summary>
    public static string DefaultModelsFolder()
    {
        var app = Path.Combine(AppContext.BaseDirectory, "DnnImageModels");
        if (Directory.Exists(app)) return app;
        var library = Path.GetDirectoryName(typeof(OnnxVisualEncoder).Assembly.Location);
        if (!string.IsNullOrEmpty(library) && Directory.Exists(Path.Combine(library, "DnnImageModels"))) return Path.Combine(library, "DnnImageModels");
        return app;
    }

    /// <summary>Feature dimension (512 for ResNet-18).</summary>
    public int Dimension => _encoder.FeatureSize;

    /// <summary>Images per encoder call.</summary>
    public int BatchSize { get; init; } = 32;

    /// <summary>
    /// Features of images given as <c>[3, H, W]</c> float tensors in [0, 1] (quantised to 8 bits, as when they are
    /// saved to PNG). Returns <c>[N, D]</c> float32 on the CPU.
    /// </summary>
    /// <exception cref="ArgumentException">An image is not <c>[3, H, W]</c>, or has values outside [0, 1] or non-finite ones.</exception>
    public Tensor Embed(IReadOnlyList<Tensor> images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (BatchSize < 1) throw new InvalidOperationException($"BatchSize must be at least 1; it is {BatchSize}.");
        var all = new float[(long)images.Count * Dimension];
        for (int start = 0; start < images.Count; start += BatchSize)
        {
            int n = Math.Min(BatchSize, images.Count - start);
            var bitmaps = new List<SKBitmap>(n);
            try
            {
                for (int i = 0; i < n; i++) bitmaps.Add(ToBitmap(images[start + i], start + i));
                var enc = _encoder.Encode(bitmaps, includeEmbedding: false);
                if (enc.Count != n || enc.FeatureSize != Dimension)
                    throw new InvalidOperationException($"Visual encoder '{_encoder.Name}' returned {enc.Count} × {enc.FeatureSize} features for {n} images; expected {n} × {Dimension}.");
                enc.Features.CopyTo(all, (long)start * Dimension);
            }
            finally
            {
                foreach (var b in bitmaps) b.Dispose();
            }
        }
        return torch.tensor(all, new long[] { images.Count, Dimension });
    }

    /// <summary>Features of image files (PNG, JPEG, …) as rows.</summary>
    public float[][] EmbedFiles(IReadOnlyList<string> paths, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(paths);
        var rows = new List<float[]>(paths.Count);
        for (int start = 0; start < paths.Count; start += BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int n = Math.Min(BatchSize, paths.Count - start);
            using var scope = torch.NewDisposeScope();
            var batch = new Tensor[n];
            for (int i = 0; i < n; i++) batch[i] = ImageFiles.LoadRgb(paths[start + i]);
            rows.AddRange(ToRows(Embed(batch)));
        }
        return rows.ToArray();
    }

    /// <summary>Features of image tensors as rows.</summary>
    public float[][] EmbedRows(IReadOnlyList<Tensor> images)
    {
        using var f = Embed(images);
        return ToRows(f);
    }

    /// <summary>The rows of a <c>[N, D]</c> feature tensor (e.g. from <see cref="Embed"/>) as arrays.</summary>
    public static float[][] ToRows(Tensor features)
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.dim() != 2) throw new ArgumentException($"Features must be [N, D]; got {Gill.ML.Serialization.SafeTensors.FormatShape(features.shape)}.", nameof(features));
        using var f = features.detach().cpu().to(ScalarType.Float32).contiguous();
        long n = f.shape[0], d = f.shape[1];
        var data = f.data<float>().ToArray();
        var rows = new float[n][];
        for (long i = 0; i < n; i++) rows[i] = data.AsSpan((int)(i * d), (int)d).ToArray();
        return rows;
    }

    private static SKBitmap ToBitmap(Tensor image, int index)
    {
        ArgumentNullException.ThrowIfNull(image);
        ImageChecks.CheckRgb01(image, index, "ResNet-18 features");
        int h = (int)image.shape[1], w = (int)image.shape[2];
        byte[] hwc;
        using (var scope = torch.NewDisposeScope())
            hwc = (image.detach().to(ScalarType.Float32).cpu().clamp(0, 1) * 255).round().to(ScalarType.Byte).permute(1, 2, 0).contiguous().data<byte>().ToArray();
        var px = new byte[4 * w * h];
        for (int i = 0; i < w * h; i++)
        {
            px[4 * i] = hwc[3 * i];
            px[4 * i + 1] = hwc[3 * i + 1];
            px[4 * i + 2] = hwc[3 * i + 2];
            px[4 * i + 3] = 255;
        }
        var bitmap = new SKBitmap(new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        System.Runtime.InteropServices.Marshal.Copy(px, 0, bitmap.GetPixels(), px.Length);
        return bitmap;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_owns && _encoder is IDisposable d) d.Dispose();
    }
}
