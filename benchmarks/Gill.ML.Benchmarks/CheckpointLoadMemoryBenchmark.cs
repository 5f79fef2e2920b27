using System.Diagnostics;
using Gill.ML.Modules;
using Gill.ML.Modules.Opt;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Benchmarks;

/// <summary>
/// Peak resident memory of loading a ~1 GB OPT checkpoint, relative to the checkpoint size. The load runs in a child
/// process so that the parent's synthesis of the checkpoint does not count.
/// </summary>
internal sealed class CheckpointLoadMemoryBenchmark : IBenchmark
{
    private const string ChildFlag = "--load-child";

    public string Name => "CheckpointLoadMemory";

    public string Description => "peak RSS growth / checkpoint size when loading a ~1 GB OPT checkpoint (goal <= 1.3)";

    public int Run(string[] args)
    {
        if (args.Length == 2 && args[0] == ChildFlag) return Child(args[1]);
        var dtype = args.Contains("fp16") ? ScalarType.Float16 : ScalarType.Float32;
        var dir = Directory.CreateTempSubdirectory("gill-ckpt-mem-").FullName;
        try
        {
            // d=1024, ffn 4096, 16 layers, OPT vocabulary: about 254M parameters, ~1.02 GB in float32
            var config = new OptConfig
            {
                VocabSize = 50272, HiddenSize = 1024, FfnDim = 4096, NumHiddenLayers = 16, NumAttentionHeads = 16,
                MaxPositionEmbeddings = 2048, WordEmbedProjDim = 1024,
            };
            Console.WriteLine($"synthesizing a {config.NumHiddenLayers}-layer d={config.HiddenSize} OPT checkpoint ({dtype}) in {dir} ...");
            using (var model = CausalLM.Create(config, new CausalLMLoadOptions { DType = dtype }, seed: 1))
                CausalLM.Save(model, dir);
            long bytes = new FileInfo(Path.Combine(dir, "model.safetensors")).Length;
            Console.WriteLine($"checkpoint: {bytes / 1e9:F3} GB");

            var exe = Environment.ProcessPath ?? throw new InvalidOperationException("Cannot locate the benchmark executable.");
            var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, UseShellExecute = false };
            if (Path.GetFileNameWithoutExtension(exe) == "dotnet") psi.ArgumentList.Add(typeof(Program).Assembly.Location);
            foreach (var a in new[] { Name, ChildFlag, dir }) psi.ArgumentList.Add(a);
            using var child = Process.Start(psi) ?? throw new InvalidOperationException("Could not start the child process.");
            string output = child.StandardOutput.ReadToEnd();
            child.WaitForExit();
            if (child.ExitCode != 0)
            {
                Console.WriteLine(output);
                Console.Error.WriteLine($"child process failed with exit code {child.ExitCode}");
                return child.ExitCode;
            }
            var fields = output.Split('\n').First(l => l.StartsWith("growth ", StringComparison.Ordinal)).Split(' ');
            long growth = long.Parse(fields[1]);
            double seconds = double.Parse(fields[2], System.Globalization.CultureInfo.InvariantCulture);
            Console.WriteLine($"load time: {seconds:F2} s");
            Console.WriteLine($"peak RSS growth during load: {growth / 1e9:F3} GB");
            Console.WriteLine($"peak RSS growth / checkpoint size: {(double)growth / bytes:F3} (goal <= 1.3)");
            return 0;
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static int Child(string dir)
    {
        // load libtorch and warm the allocator before the baseline
        using (var warm = torch.ones(16)) warm.sum().item<float>();
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        long baseline = Measure.RssBytes();
        var sw = Stopwatch.StartNew();
        using var model = CausalLM.Load(dir);
        double seconds = sw.Elapsed.TotalSeconds;
        long peak = Measure.PeakRssBytes();
        Console.WriteLine(FormattableString.Invariant($"growth {peak - baseline} {seconds}"));
        return 0;
    }
}
