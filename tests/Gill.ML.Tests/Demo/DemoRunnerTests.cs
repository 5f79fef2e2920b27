using System.Diagnostics;
using System.Text.Json;
using Gill.ML.Evaluation.Demo;
using Gill.ML.Tests.WorldModels;
using TorchSharp;

namespace Gill.ML.Tests.Demo;

[TestClass]
public sealed class DemoRunnerTests
{
    private static string NewDir(string name) => Path.Combine(Path.GetTempPath(), $"gill-demo-{name}-" + Guid.NewGuid().ToString("N"));

    internal static DemoOptions Scaled(string root, int steps) => new()
    {
        Pretraining = WorldPretrainerTests.Tiny(Path.Combine(root, "cache")),
        OutputDirectory = Path.Combine(root, "out"),
        Seed = 3,
        Steps = steps,
        BatchSize = 16,
        LearningRate = 3e-3,
        EvaluationImages = 30,
        EvaluationStories = 6,
        Samples = 2,
    };

    [TestMethod]
    public void RejectsInvalidOptions()
    {
        var o = new DemoOptions { Steps = 0 };
        var ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DemoRunner.Run(o));
        StringAssert.Contains(ex.Message, "Steps");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DemoRunner.Run(new DemoOptions { EvaluationImages = 3 }));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DemoRunner.Run(new DemoOptions { BatchSize = 1 }));
    }

    [TestMethod]
    public void PretrainOptionsFollowQuickSeedAndCache()
    {
        var p = DemoRunner.PretrainOptions(new DemoOptions { Quick = true, Seed = 5, CacheDirectory = "/tmp/x" });
        Assert.AreEqual(5, p.Seed);
        Assert.AreEqual("/tmp/x", p.CacheDirectory);
        Assert.AreEqual(0.25, p.StepsScale);
        Assert.AreEqual(1.0, DemoRunner.PretrainOptions(new DemoOptions()).StepsScale);
    }

    [TestMethod]
    [TestCategory("Heavy")]
    public void ScaledDownDemoRunsEndToEndAndWritesEveryFigure()
    {
        string root = NewDir("full");
        int saved = torch.get_num_threads();
        try
        {
            var sw = Stopwatch.StartNew();
            var phases = new HashSet<string>();
            var result = DemoRunner.Run(Scaled(root, steps: 120), new SyncProgress(p => { phases.Add(p.Phase); if (p.Phase == "training" && (p.Step <= 3 || p.Step % 20 == 0)) Console.WriteLine($"step {p.Step}: {p.Loss} {p.Message}"); }));
            double seconds = sw.Elapsed.TotalSeconds;
            var f1 = result.Figures.RetrievalRecallAt1;
            Console.WriteLine($"demo (tiny) {seconds:F1} s: " + string.Join("; ", result.Figures.All.Select(f => $"{f.Name} {f.Value:F3} vs {f.BaselineName} {f.Baseline:F3}")));
            Console.WriteLine("seconds: " + string.Join(", ", result.Figures.Seconds.Select(kv => $"{kv.Key} {kv.Value:F1}")));
            Assert.AreEqual(saved, torch.get_num_threads(), "the thread setting is restored");
            CollectionAssert.IsSubsetOf(new[] { "pretraining", "training", "inference", "evaluation", "report" }, phases.ToArray());

            Assert.IsTrue(File.Exists(result.ModelPath), "model zip");
            string html = File.ReadAllText(result.ReportPath);
            using var json = JsonDocument.Parse(File.ReadAllText(result.FiguresPath));
            var root2 = json.RootElement;
            foreach (var key in new[] { "retrieval_recall_at_1", "retrieval_recall_at_5", "generation_color_accuracy", "generation_shape_accuracy",
                         "generation_color_and_shape_accuracy", "story_similarity", "loss" })
            {
                var f = root2.GetProperty(key);
                Assert.IsTrue(double.IsFinite(f.GetProperty("value").GetDouble()), key);
                Assert.IsTrue(double.IsFinite(f.GetProperty("baseline").GetDouble()), key);
                StringAssert.Contains(html, System.Net.WebUtility.HtmlEncode(f.GetProperty("name").GetString()!), key);
            }
            foreach (var phase in new[] { "pretraining", "training", "inference", "evaluation", "report" })
                Assert.IsTrue(root2.GetProperty("seconds").TryGetProperty(phase, out _), phase);
            Assert.AreEqual(120, root2.GetProperty("loss_curve").GetArrayLength());
            StringAssert.Contains(html, "data:image/png;base64,");
            StringAssert.Contains(html, DemoRunner.EmbedderLabel);
            Assert.IsFalse(html.Contains("class=\"missing\"", StringComparison.Ordinal), "every sample has its generated and retrieved image");

            Assert.IsTrue(result.Figures.Loss.Value < result.Figures.Loss.Baseline, $"loss fell: {result.Figures.Loss.Baseline:F3} → {result.Figures.Loss.Value:F3}");
            // 120 steps on the tiny world: Recall@5 measured 0.43 against chance 0.17 (N = 30); at least twice chance is required.
            var f5 = result.Figures.RetrievalRecallAt5;
            Assert.IsTrue(f5.Value >= 2 * f5.Baseline, $"Recall@5 {f5.Value:F3} is not at least 2× chance {f5.Baseline:F3} (Recall@1 {f1.Value:F3} vs {f1.Baseline:F3})");

            Assert.AreEqual(0, result.Figures.VisualEncoders.Count, "the ResNet-18 comparison is off by default");

            // A second run reuses the cached backbones, and compares the two visual feature stages.
            var options = Scaled(root, steps: 4);
            options.CompareResNet18Steps = 3;
            var again = DemoRunner.Run(options);
            Assert.IsTrue(again.Figures.PretrainingCached);
            Assert.AreEqual(2, again.Figures.VisualEncoders.Count);
            foreach (var f in again.Figures.VisualEncoders)
            {
                StringAssert.Contains(f.Name, "ResNet-18");
                Assert.AreEqual(30, f.N);
                Assert.IsTrue(f.Value is >= 0 and <= 1 && f.Baseline is >= 0 and <= 1, $"{f.Name}: {f.Value} vs {f.Baseline}");
                StringAssert.Contains(File.ReadAllText(again.ReportPath), System.Net.WebUtility.HtmlEncode(f.Name));
            }
            Assert.IsTrue(again.Figures.Seconds.ContainsKey("encoders"));
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, true);
        }
    }

    private sealed class SyncProgress(Action<DemoProgress> report) : IProgress<DemoProgress>
    {
        public void Report(DemoProgress value) => report(value);
    }
}
