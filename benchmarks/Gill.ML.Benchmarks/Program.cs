using System.Diagnostics;
using System.Reflection;

namespace Gill.ML.Benchmarks;

/// <summary>A named benchmark. Benchmarks print numbers; they never assert.</summary>
internal interface IBenchmark
{
    /// <summary>Name used on the command line.</summary>
    string Name { get; }

    /// <summary>One-line description.</summary>
    string Description { get; }

    /// <summary>Runs the benchmark with its own arguments and prints its report.</summary>
    int Run(string[] args);
}

/// <summary>Shared measurement helpers: medians over repeated runs after a warm-up, alternating A and B.</summary>
internal static class Measure
{
    /// <summary>Times <paramref name="action"/> <paramref name="runs"/> times after <paramref name="warmup"/> warm-ups; returns seconds per run.</summary>
    public static double[] Time(Action action, int runs = 5, int warmup = 1)
    {
        for (int i = 0; i < warmup; i++) action();
        var result = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            var sw = Stopwatch.StartNew();
            action();
            result[i] = sw.Elapsed.TotalSeconds;
        }
        return result;
    }

    /// <summary>Median of a sample.</summary>
    public static double Median(IReadOnlyList<double> xs)
    {
        var s = xs.OrderBy(x => x).ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : 0.5 * (s[s.Length / 2 - 1] + s[s.Length / 2]);
    }

    /// <summary>"median (min–max)" formatted in the given unit scale.</summary>
    public static string Summary(IReadOnlyList<double> xs, double scale = 1000, string unit = "ms") =>
        $"{Median(xs) * scale:F2} {unit} (min {xs.Min() * scale:F2}, max {xs.Max() * scale:F2}, n={xs.Count})";

    /// <summary>Peak resident set size of this process so far (VmHWM), in bytes; 0 when unavailable.</summary>
    public static long PeakRssBytes() => ReadStatusKb("VmHWM:") * 1024;

    /// <summary>Current resident set size (VmRSS), in bytes; 0 when unavailable.</summary>
    public static long RssBytes() => ReadStatusKb("VmRSS:") * 1024;

    private static long ReadStatusKb(string key)
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return 0;
        foreach (var line in File.ReadLines(status))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return long.Parse(line[key.Length..].Trim().Split(' ')[0]);
        return 0;
    }
}

internal static class Program
{
    public static int Main(string[] args)
    {
        var benches = typeof(Program).Assembly.GetTypes()
            .Where(t => !t.IsAbstract && typeof(IBenchmark).IsAssignableFrom(t))
            .Select(t => (IBenchmark)Activator.CreateInstance(t)!)
            .OrderBy(b => b.Name, StringComparer.Ordinal).ToList();
        if (args.Length == 0 || args[0] is "-h" or "--help" or "list")
        {
            Console.WriteLine("usage: dotnet run -c Release --project benchmarks/Gill.ML.Benchmarks -- NAME [args]");
            foreach (var b in benches) Console.WriteLine($"  {b.Name,-24} {b.Description}");
            return args.Length == 0 ? 1 : 0;
        }
        var bench = benches.FirstOrDefault(b => b.Name == args[0]);
        if (bench is null)
        {
            Console.Error.WriteLine($"Unknown benchmark '{args[0]}'. Known: {string.Join(", ", benches.Select(b => b.Name))}");
            return 2;
        }
        return bench.Run(args[1..]);
    }
}
