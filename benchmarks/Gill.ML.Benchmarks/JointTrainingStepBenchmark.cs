using System.Diagnostics;
using System.Text.Json.Nodes;
using Gill.ML.Modules;
using Gill.ML.Modules.Opt;
using Gill.ML.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Benchmarks;

/// <summary>
/// Time per GILL joint training step (captioning pass + text-only pass, losses, backward, clipping, AdamW, E_img
/// re-normalisation) of Gill.ML against the same step in PyTorch (benchmarks/reference/gill_step_pytorch.py), run in
/// the same benchmark: C#, then PyTorch, then C# again. Also measures each side's 1024³ fp32 matmul rate.
/// Arguments: [tiny|mid|both=both] [steps=6] [threads=2] [python=python3].
/// </summary>
internal sealed class JointTrainingStepBenchmark : IBenchmark
{
    public string Name => "joint-training-step";

    public string Description => "GILL joint training step: Gill.ML (TorchSharp) vs PyTorch reference, tiny and mid-size configs";

    private sealed record Config(string Name, int Vocab, int D, int Layers, int Heads, int Ffn, int MaxPos, int K, int R, int Dv, int P,
        int M, int MHeads, int MEnc, int MDec, int MFfn, int L, int Out, int Batch, int T);

    // Must match CONFIGS in gill_step_pytorch.py.
    private static readonly Config[] Configs =
    {
        new("tiny", 96, 32, 2, 4, 64, 32, 2, 4, 20, 8, 16, 2, 1, 1, 64, 6, 12, 4, 12),
        new("mid", 8192, 512, 6, 8, 2048, 64, 4, 8, 1024, 256, 256, 4, 4, 4, 1024, 77, 768, 16, 32),
    };

    public int Run(string[] args)
    {
        string which = args.Length > 0 ? args[0] : "both";
        int steps = args.Length > 1 ? int.Parse(args[1]) : 6;
        int threads = args.Length > 2 ? int.Parse(args[2]) : 2;
        string python = args.Length > 3 ? args[3] : "python3";
        torch.set_num_threads(threads);
        var script = FindUp(Path.Combine("benchmarks", "reference", "gill_step_pytorch.py"));
        Console.WriteLine($"threads {threads}, {steps} timed steps per side and round after 2 warm-up steps; load average: {File.ReadAllText("/proc/loadavg").Trim()}");
        foreach (var c in Configs.Where(c => which == "both" || which == c.Name))
        {
            Console.WriteLine($"\n== {c.Name}: OPT d={c.D}, {c.Layers} layers, vocab {c.Vocab}; batch {c.Batch}, T={c.T}, k={c.K}, r={c.R}, Dv={c.Dv}, p={c.P}, mapper m={c.M} ({c.MEnc}+{c.MDec} layers), L×out={c.L}×{c.Out}");
            var cs1 = RunCSharp(c, steps);
            var py = RunPython(python, script, c.Name, steps, threads, threePasses: false);
            var cs2 = RunCSharp(c, steps);
            var cs = cs1.Times.Concat(cs2.Times).ToList();
            Console.WriteLine($"C#      step: {Measure.Summary(cs)}; matmul {Math.Max(cs1.Gflops, cs2.Gflops):F1} GFLOP/s; peak RSS {Measure.PeakRssBytes() / 1048576.0:F0} MiB (process)");
            Console.WriteLine($"PyTorch step: {Measure.Summary(py.Times)}; matmul {py.Gflops:F1} GFLOP/s; peak RSS {py.PeakRss / 1048576.0:F0} MiB; torch {py.Version}");
            Console.WriteLine($"ratio C#/PyTorch (medians): {Measure.Median(cs) / Measure.Median(py.Times):F3}");
            var py3 = RunPython(python, script, c.Name, steps, threads, threePasses: true);
            Console.WriteLine($"PyTorch step with 3 LM passes (the original code runs the identical text-only pass twice): {Measure.Summary(py3.Times)}");
        }
        Console.WriteLine($"\nload average after: {File.ReadAllText("/proc/loadavg").Trim()}");
        return 0;
    }

    private static string FindUp(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var p = Path.Combine(dir.FullName, relative);
            if (File.Exists(p) || Directory.Exists(p)) return p;
        }
        throw new FileNotFoundException($"'{relative}' not found above {AppContext.BaseDirectory}.");
    }

    private static (List<double> Times, double Gflops) RunCSharp(Config c, int steps)
    {
        using var lm = CausalLM.Create(new OptConfig
        {
            VocabSize = c.Vocab, HiddenSize = c.D, WordEmbedProjDim = c.D, NumHiddenLayers = c.Layers, NumAttentionHeads = c.Heads,
            FfnDim = c.Ffn, MaxPositionEmbeddings = c.MaxPos, PadTokenId = 1, BosTokenId = 2, EosTokenId = 2,
        }, seed: 1);
        var ids = Enumerable.Range(c.Vocab, c.R).ToArray();
        var config = new GillConfig
        {
            NVisualTokens = c.K, NumTokens = c.R, VisualHiddenSize = c.Dv, RetEmbDim = c.P, MapperHiddenDim = c.M, MapperNumHeads = c.MHeads,
            MapperNumEncoderLayers = c.MEnc, MapperNumDecoderLayers = c.MDec, MapperFfnDim = c.MFfn, NumClipTokens = c.L, GenEmbDim = c.Out,
            RetrievalTokenIdx = ids, GenTokenIdx = ids, PadTokenId = 1, BosTokenId = 2, OptVersion = null, VisualEncoder = null,
        };
        using var model = new GillCoreModel(lm, config, seed: 1);
        using var step = new GillTrainingStep(model, new GillTrainingOptions { LearningRate = 1e-3, WarmupSteps = 0, ConcatenationProbability = 0, Seed = 1 });
        var rng = new Random(1);
        var tokens = new List<long[]>();
        var lens = new List<long>();
        for (int i = 0; i < c.Batch; i++)
        {
            int n = (c.T - c.R - 1) - (i % 4);
            var caption = Enumerable.Range(0, n).Select(_ => 3 + rng.Next(c.Vocab - 3)).ToArray();
            var (seq, len) = GillSequences.Build(caption, c.T, 2, 1, ids);
            tokens.Add(seq);
            lens.Add(len);
        }
        var feats = Enumerable.Range(0, c.Batch).Select(_ => Enumerable.Range(0, c.Dv).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray()).ToList();
        var targets = Enumerable.Range(0, c.Batch).Select(_ => Enumerable.Range(0, c.L * c.Out).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray()).ToList();
        var batch = GillBatch.FromArrays(feats, tokens, lens, targets, c.L);
        foreach (var t in new[] { batch.VisualFeatures, batch.TokenIds, batch.CaptionLengths, batch.GenerationTargets! }) t.DetachFromDisposeScope();
        try
        {
            double gflops = MatmulGflops();
            var times = Measure.Time(() => step.Step(batch), steps, warmup: 2).ToList();
            return (times, Math.Max(gflops, MatmulGflops()));
        }
        finally
        {
            batch.VisualFeatures.Dispose();
            batch.TokenIds.Dispose();
            batch.CaptionLengths.Dispose();
            batch.GenerationTargets!.Dispose();
        }
    }

    private static double MatmulGflops()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.randn(1024, 1024);
        var b = torch.randn(1024, 1024);
        var times = Measure.Time(() => { using var _ = torch.matmul(a, b); }, 5, 1);
        return 2.0 * Math.Pow(1024, 3) / Measure.Median(times) / 1e9;
    }

    private static (List<double> Times, double Gflops, long PeakRss, string Version) RunPython(string python, string script, string config, int steps, int threads, bool threePasses)
    {
        var psi = new ProcessStartInfo(python)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { script, "--config", config, "--steps", steps.ToString(), "--threads", threads.ToString() }) psi.ArgumentList.Add(a);
        if (threePasses) psi.ArgumentList.Add("--three-passes");
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"Could not start '{python}'.");
        var stdout = p.StandardOutput.ReadToEnd();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{python} {script} failed ({p.ExitCode}): {stderr}");
        var json = JsonNode.Parse(stdout.Trim().Split('\n').Last())!;
        var times = json["step_seconds"]!.AsArray().Select(n => n!.GetValue<double>()).ToList();
        return (times, json["matmul_gflops"]!.GetValue<double>(), json["peak_rss_bytes"]!.GetValue<long>(), json["torch"]!.GetValue<string>());
    }
}
