using System.Diagnostics;
using System.Globalization;
using Gill.ML.Retrieval;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Benchmarks;

/// <summary>
/// Exact top-k retrieval over memory-mapped galleries (100k×256 and 1M×256, fp32 and fp16): queries per second for one
/// query and a batch of queries, against the memory-bandwidth floor measured in the same run (copy of a 256 MiB tensor).
/// Args: [--sizes 100000,1000000] [--dir DIR] [--keep] [--threads N].
/// </summary>
internal sealed class RetrievalBenchmark : IBenchmark
{
    public string Name => "retrieval";
    public string Description => "Memory-mapped gallery top-k: queries/s vs the memory-bandwidth floor (100k and 1M × 256, fp32/fp16)";

    public int Run(string[] args)
    {
        var sizes = new List<long> { 100_000, 1_000_000 };
        string dir = Path.Combine(Path.GetTempPath(), "gill-retrieval-bench");
        bool keep = false;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--sizes") sizes = args[++i].Split(',').Select(s => long.Parse(s, CultureInfo.InvariantCulture)).ToList();
            else if (args[i] == "--dir") dir = args[++i];
            else if (args[i] == "--keep") keep = true;
            else if (args[i] == "--threads") torch.set_num_threads(int.Parse(args[++i], CultureInfo.InvariantCulture));
        }
        Directory.CreateDirectory(dir);
        const int dim = 256, k = 10;
        Console.WriteLine($"threads {torch.get_num_threads()}, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}, dim {dim}, k {k}");

        // Bandwidth: copy a 256 MiB float tensor (read 256 MiB + write 256 MiB).
        double bandwidth;
        using (var src = torch.rand(64L * 1024 * 1024))
        using (var dst = torch.empty_like(src))
        {
            var times = Measure.Time(() => dst.copy_(src), runs: 7, warmup: 2);
            double bytes = 2.0 * src.NumberOfElements * 4;
            bandwidth = bytes / Measure.Median(times);
            Console.WriteLine($"copy 256 MiB: {Measure.Summary(times)} → bandwidth {bandwidth / 1e9:F2} GB/s (read+write)");
        }

        var hash = new byte[32];
        foreach (long n in sizes)
        {
            foreach (var dtype in new[] { GillIndexDType.Float32, GillIndexDType.Float16 })
            {
                string path = Path.Combine(dir, $"gallery-{n}-{dtype}.gidx");
                var sw = Stopwatch.StartNew();
                if (!File.Exists(path))
                {
                    using var writer = new GillRetrievalIndexWriter(path, dim, hash, dtype);
                    using var gen = new Generator(42);
                    for (long start = 0; start < n; start += 65536)
                    {
                        using var scope = torch.NewDisposeScope();
                        long m = Math.Min(65536, n - start);
                        var v = torch.randn(new[] { m, (long)dim }, generator: gen);
                        writer.Add(v, Enumerable.Range(0, (int)m).Select(i => $"img/{start + i:D8}.jpg").ToList());
                    }
                    writer.Complete();
                }
                double buildS = sw.Elapsed.TotalSeconds;
                sw.Restart();
                using var index = GillRetrievalIndex.Open(path, verifyChecksum: true);
                double openS = sw.Elapsed.TotalSeconds;
                long bytesScanned = n * dim * (dtype == GillIndexDType.Float16 ? 2L : 4L);
                double floor = bytesScanned / bandwidth;
                Console.WriteLine($"\n{n:N0} × {dim} {dtype}: file {new FileInfo(path).Length / 1048576.0:F0} MiB, build {buildS:F1} s, open+verify SHA-256 {openS:F2} s, RSS {Measure.RssBytes() / 1048576.0:F0} MiB");
                foreach (int q in new[] { 1, 64 })
                {
                    using var queries = torch.randn(q, dim, generator: new Generator(7));
                    var times = Measure.Time(() => index.SearchRaw(queries, k), runs: 5, warmup: 1);
                    double t = Measure.Median(times);
                    Console.WriteLine($"  {q,3} queries/call: {Measure.Summary(times)} → {q / t:F1} queries/s; floor (one pass over {bytesScanned / 1048576.0:F0} MiB) {floor * 1000:F2} ms, ratio {t / floor:F2}×");
                }
                Console.WriteLine($"  peak RSS {Measure.PeakRssBytes() / 1048576.0:F0} MiB");
                if (!keep) { index.Dispose(); File.Delete(path); }
            }
        }
        return 0;
    }
}
