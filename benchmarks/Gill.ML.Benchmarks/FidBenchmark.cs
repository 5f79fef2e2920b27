using Gill.ML.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Benchmarks;

/// <summary>
/// FID: InceptionV3 pool3 extraction throughput (images resized to 299, batched) and the time of the Fréchet step on
/// 2048-d statistics. Arguments: [--images N] [--batch B] [--size S] [--runs R] [--device cpu|cuda] [--weights FILE].
/// </summary>
internal sealed class FidBenchmark : IBenchmark
{
    public string Name => "fid";

    public string Description => "FID Inception pool3 images/s (batched) and the 2048-d Fréchet distance time";

    public int Run(string[] args)
    {
        int images = 32, batch = 32, size = 64, runs = 3;
        string device = "cpu";
        string? weights = null;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--images": images = int.Parse(args[i + 1]); break;
                case "--batch": batch = int.Parse(args[i + 1]); break;
                case "--size": size = int.Parse(args[i + 1]); break;
                case "--runs": runs = int.Parse(args[i + 1]); break;
                case "--device": device = args[i + 1]; break;
                case "--weights": weights = args[i + 1]; break;
                default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
            }
        }
        weights ??= FindFixture();
        var dev = torch.device(device);
        var options = new FidFeatureExtractorOptions { BatchSize = batch, Device = dev };
        using var extractor = weights is not null ? FidFeatureExtractor.Load(weights, options) : FidFeatureExtractor.CreateRandom(0, options);
        Console.WriteLine($"device: {dev}, threads: {torch.get_num_threads()}, weights: {weights ?? "random"}");
        torch.random.manual_seed(0);
        var imgs = Enumerable.Range(0, images).Select(_ => torch.rand(3, size, size)).ToArray();
        var t = Measure.Time(() =>
        {
            using var f = extractor.Extract(imgs);
            if (dev.type == DeviceType.CUDA) torch.cuda.synchronize();
        }, runs: runs, warmup: 1);
        double med = Measure.Median(t);
        Console.WriteLine($"extract {images} images {size}x{size} (batch {batch}, resized to 299): {Measure.Summary(t)} -> {images / med:F1} images/s");

        // Fréchet step: statistics of two random 2048-d sets (N = 4096 each), then the distance.
        using var a = torch.randn(4096, 2048, ScalarType.Float64);
        using var b = torch.randn(4096, 2048, ScalarType.Float64) * 1.1 + 0.05;
        FeatureStatistics? sa = null, sb = null;
        var ts = Measure.Time(() => { sa = FeatureStatistics.FromFeatures(a); sb = FeatureStatistics.FromFeatures(b); }, runs: 1, warmup: 0);
        Console.WriteLine($"statistics of 2 x 4096 x 2048 features (float64): {Measure.Summary(ts)}");
        double fid = 0;
        var tf = Measure.Time(() => fid = FidEvaluator.FromStatistics(sa!, sb!, new FidOptions()).Value, runs: runs, warmup: 1);
        Console.WriteLine($"Fréchet distance 2048-d (eigh-based sqrtm, float64): {Measure.Summary(tf)}; FID = {fid:F4}");
        Console.WriteLine($"peak RSS: {Measure.PeakRssBytes() / (1 << 20)} MiB");
        foreach (var im in imgs) im.Dispose();
        return 0;
    }

    private static string? FindFixture()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null)
        {
            var p = Path.Combine(dir.FullName, "..", "shared", "fixtures", "fid-inception", "model.safetensors");
            if (File.Exists(p)) return Path.GetFullPath(p);
            dir = dir.Parent;
        }
        return null;
    }
}
