using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Gill.ML.Evaluation;

/// <summary>Options of <see cref="FidFeatureExtractor"/>.</summary>
public sealed class FidFeatureExtractorOptions
{
    /// <summary>Device the network runs on (built on CPU, loaded, then moved). Default: CPU.</summary>
    public Device? Device { get; set; }

    /// <summary>Images per forward pass.</summary>
    public int BatchSize { get; set; } = 32;

    /// <summary>Progress (images done) for long extractions.</summary>
    public IProgress<int>? Progress { get; set; }

    /// <summary>Throws when a setting is out of range.</summary>
    public void Validate()
    {
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be at least 1.");
    }
}

/// <summary>
/// pool3 features of the FID InceptionV3 (the pt_inception-2015-12-05 network that FID numbers are quoted with, as in
/// pytorch-fid): each RGB image in [0, 1] is resized to 299×299 (bilinear, align_corners=False, no antialiasing), mapped
/// to [−1, 1] by 2x − 1 and run through the network; the 2048-d global average pool after Mixed_7c is returned.
/// </summary>
/// <remarks>
/// Weights: a safetensors file with torchvision / pytorch-fid key names (<c>Conv2d_1a_3x3.conv.weight</c>,
/// <c>Mixed_7c.branch_pool.bn.running_var</c>, …; F16, BF16 or F32, loaded into float32). The classifier
/// <c>fc.weight</c>/<c>fc.bias</c> may be present and is ignored.
/// </remarks>
public sealed class FidFeatureExtractor : IDisposable
{
    private readonly nn.Module<Tensor, Tensor> _net;
    private readonly FidFeatureExtractorOptions _options;
    private readonly Device _device;
    private readonly long _inputSize;

    /// <summary>Size of the features (2048).</summary>
    public int FeatureSize { get; }

    private FidFeatureExtractor(Fid.FidInceptionV3 net, FidFeatureExtractorOptions options)
        : this(net, Fid.FidInceptionV3.FeatureSize, 299, options)
    {
    }

    /// <summary>
    /// An extractor around any network mapping <c>[N, 3, S, S]</c> in [−1, 1] to <c>[N, featureSize]</c> (the file
    /// streaming and statistics code is the same; used by tests with a small network).
    /// </summary>
    internal FidFeatureExtractor(nn.Module<Tensor, Tensor> net, int featureSize, long inputSize, FidFeatureExtractorOptions options)
    {
        _options = options;
        _device = options.Device ?? CPU;
        _net = net;
        _inputSize = inputSize;
        FeatureSize = featureSize;
        _net.eval();
        _net.to(_device);
    }

    /// <summary>Loads the network from a safetensors file (or a folder with model.safetensors).</summary>
    public static FidFeatureExtractor Load(string weightsPath, FidFeatureExtractorOptions? options = null)
    {
        options ??= new FidFeatureExtractorOptions();
        options.Validate();
        var net = new Fid.FidInceptionV3();
        try
        {
            using var checkpoint = SafeTensorsCheckpoint.Open(weightsPath);
            WeightLoader.Load(net, checkpoint, k => k,
                ignoredCheckpointKey: k => k.StartsWith("fc.", StringComparison.Ordinal) || k.EndsWith(".num_batches_tracked", StringComparison.Ordinal),
                optionalModuleKey: k => k.EndsWith(".num_batches_tracked", StringComparison.Ordinal));
        }
        catch
        {
            net.Dispose();
            throw;
        }
        return new FidFeatureExtractor(net, options);
    }

    /// <summary>A network with seeded random weights (for throughput measurements only; its features mean nothing).</summary>
    internal static FidFeatureExtractor CreateRandom(int seed, FidFeatureExtractorOptions? options = null)
    {
        options ??= new FidFeatureExtractorOptions();
        options.Validate();
        torch.random.manual_seed(seed);
        return new FidFeatureExtractor(new Fid.FidInceptionV3(), options);
    }

    /// <summary>
    /// Preprocesses one image: <c>[3, H, W]</c> in [0, 1] → <c>[3, 299, 299]</c> (the network's input size) in [−1, 1] on the extractor's device.
    /// </summary>
    internal Tensor Preprocess(Tensor image, int index)
    {
        ImageChecks.CheckRgb01(image, index, "FID");
        using var scope = NewDisposeScope();
        var x = image.to(ScalarType.Float32).to(_device).unsqueeze(0);
        x = F.interpolate(x, new long[] { _inputSize, _inputSize }, mode: InterpolationMode.Bilinear, align_corners: false);
        return (x.squeeze(0) * 2 - 1).MoveToOuterDisposeScope();
    }

    /// <summary>pool3 features of a batch of images (each <c>[3, H, W]</c>, float in [0, 1]); returns <c>[N, 2048]</c> float32 on CPU.</summary>
    public Tensor Extract(IReadOnlyList<Tensor> images, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(images);
        var parts = new List<Tensor>();
        try
        {
            for (int start = 0; start < images.Count; start += _options.BatchSize)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int n = Math.Min(_options.BatchSize, images.Count - start);
                using var scope = NewDisposeScope();
                using var noGrad = torch.no_grad();
                var batch = torch.stack(Enumerable.Range(start, n).Select(i => Preprocess(images[i], i)).ToArray());
                parts.Add(_net.forward(batch).to(ScalarType.Float32).cpu().MoveToOuterDisposeScope());
                _options.Progress?.Report(start + n);
            }
            if (parts.Count == 0) return torch.empty(new long[] { 0, FeatureSize });
            return torch.cat(parts, 0);
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
        }
    }

    /// <summary>Runs the network on an already preprocessed batch <c>[N, 3, 299, 299]</c> in [−1, 1].</summary>
    internal Tensor ForwardPreprocessed(Tensor batch)
    {
        using var noGrad = torch.no_grad();
        return _net.forward(batch);
    }

    /// <summary>
    /// Streams image files through the network into a <see cref="FeatureStatisticsAccumulator"/> (one batch of decoded
    /// images in memory at a time) and, when <paramref name="keepFeatures"/> is set, also returns the features (for KID).
    /// </summary>
    public (FeatureStatistics Statistics, float[][]? Features) ExtractFromFiles(IReadOnlyList<string> paths, bool keepFeatures = false, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(paths);
        var acc = new FeatureStatisticsAccumulator(FeatureSize);
        var kept = keepFeatures ? new List<float[]>() : null;
        for (int start = 0; start < paths.Count; start += _options.BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int n = Math.Min(_options.BatchSize, paths.Count - start);
            using var scope = NewDisposeScope();
            using var noGrad = torch.no_grad();
            var pre = new Tensor[n];
            for (int i = 0; i < n; i++)
            {
                using var img = ImageFiles.LoadRgb(paths[start + i]);
                try
                {
                    pre[i] = Preprocess(img, start + i);
                }
                catch (ArgumentException e)
                {
                    throw new ArgumentException($"Image '{paths[start + i]}': {e.Message}", e);
                }
            }
            var feats = _net.forward(torch.stack(pre)).to(ScalarType.Float64).cpu();
            acc.Add(feats);
            if (kept is not null)
            {
                var f32 = feats.to(ScalarType.Float32).contiguous();
                var data = f32.data<float>().ToArray();
                for (int i = 0; i < n; i++) kept.Add(data.AsSpan(i * FeatureSize, FeatureSize).ToArray());
            }
            _options.Progress?.Report(start + n);
        }
        return (acc.ToStatistics(), kept?.ToArray());
    }

    /// <inheritdoc />
    public void Dispose() => _net.Dispose();
}

internal static class ImageChecks
{
    /// <summary>Checks an image is <c>[3, H, W]</c> with finite values in [0, 1] (a small tolerance allowed).</summary>
    public static void CheckRgb01(Tensor image, int index, string metric)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image.dim() != 3 || image.shape[0] != 3)
            throw new ArgumentException($"{metric}: image {index} must be an RGB tensor [3, H, W], but its shape is {Gill.ML.Serialization.SafeTensors.FormatShape(image.shape)}" +
                (image.dim() == 3 && image.shape[0] is 1 or 4 ? $" ({image.shape[0]} channels: convert to RGB first)." : "."), nameof(image));
        if (image.shape[1] < 1 || image.shape[2] < 1)
            throw new ArgumentException($"{metric}: image {index} is empty ({Gill.ML.Serialization.SafeTensors.FormatShape(image.shape)}).", nameof(image));
        CheckRange(image, index, metric, 0, 1, "[0, 1] (divide 8-bit pixels by 255)");
    }

    public static void CheckRange(Tensor image, int index, string metric, double lo, double hi, string what)
    {
        using var scope = NewDisposeScope();
        var f = image.to(ScalarType.Float32);
        if (!f.isfinite().all().item<bool>())
            throw new ArgumentException($"{metric}: image {index} contains NaN or infinite values.", nameof(image));
        double min = f.min().item<float>(), max = f.max().item<float>();
        const double tol = 1e-3;
        if (min < lo - tol || max > hi + tol)
            throw new ArgumentException($"{metric}: image {index} has values in [{min:G4}, {max:G4}], expected {what}.", nameof(image));
    }
}
