using System.Diagnostics;
using System.Text.Json;
using Gill.ML.Evaluation.Paper;
using Gill.ML.Tests.WorldModels;
using Gill.ML.World;
using Gill.ML.World.Pretraining;
using TorchSharp;

namespace Gill.ML.Tests.Paper;

[TestClass]
public sealed class PaperExperimentsTests
{
    private sealed class SyncProgress(Action<PaperProgress> report) : IProgress<PaperProgress>
    {
        public void Report(PaperProgress value) => report(value);
    }

    [TestMethod]
    [TestCategory("Heavy")]
    public void TinyWorldRunWritesEveryTableWithFiniteNumbers()
    {
        string root = Path.Combine(Path.GetTempPath(), "gill-paper-e2e-" + Guid.NewGuid().ToString("N"));
        int saved = torch.get_num_threads();
        try
        {
            var sw = Stopwatch.StartNew();
            var pretrain = WorldPretrainerTests.Tiny(Path.Combine(root, "cache"));
            pretrain.World.DecisionPrompts = new ShapesSplitCounts(40, 20, 20);
            torch.set_num_threads(1);
            var world = WorldPretrainer.Run(pretrain);
            torch.set_num_threads(saved);
            double pretrainSeconds = sw.Elapsed.TotalSeconds;
            var cacheStamp = Directory.GetFiles(world.CacheDirectory, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.GetLastWriteTimeUtc);

            sw.Restart();
            var phases = new HashSet<string>();
            var options = new PaperOptions
            {
                CacheDirectory = world.CacheDirectory,
                OutputDirectory = Path.Combine(root, "out"),
                Seeds = 2,
                Steps = 3,
                BatchSize = 8,
                EvaluationStories = 5,
                EvaluationDialogues = 4,
                EvaluationImages = 16,
                MemoryPairs = 40,
                DecisionGalleryImages = 150,
            };
            var result = PaperExperiments.Run(options, new SyncProgress(p => phases.Add(p.Phase)));
            double runSeconds = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"tiny pretraining {pretrainSeconds:F1} s, paper run {runSeconds:F1} s");

            Assert.AreEqual(saved, torch.get_num_threads(), "the thread setting is restored");
            Assert.IsTrue(phases.Any(p => p.Contains("training", StringComparison.Ordinal)));
            CollectionAssert.AreEqual(PaperOptions.ExperimentNames.ToArray(), result.Tables.Select(t => t.Name).ToArray());
            foreach (var name in PaperOptions.ExperimentNames)
                foreach (var ext in new[] { ".md", ".json", ".png" })
                    Assert.IsTrue(File.Exists(Path.Combine(options.OutputDirectory, name + ext)), name + ext);
            string index = File.ReadAllText(result.IndexPath);
            foreach (var t in result.Tables)
            {
                StringAssert.Contains(index, t.Title);
                foreach (var row in t.Rows)
                    foreach (var (column, cell) in row.Cells)
                    {
                        Assert.IsTrue(double.IsFinite(cell.Mean) && double.IsFinite(cell.Std), $"{t.Name} / {row.Label} / {column}: {cell.Mean} ± {cell.Std}");
                        Assert.IsTrue(cell.N is 1 or 2, $"{t.Name} / {row.Label} / {column}: {cell.N} values");
                    }
            }
            Assert.AreEqual(2, result.Tables.Single(t => t.Name == "stories").Cell("GILL", "CLIP 5c+4i")!.N, "one value per seed");
            Assert.AreEqual(4, result.Tables.Single(t => t.Name == "mapper").Rows.Count);
            Assert.AreEqual(4, result.Tables.Single(t => t.Name == "img-tokens").Rows.Count);
            Assert.AreEqual(5, result.Tables.Single(t => t.Name == "decision").Rows.Count);
            Assert.AreEqual(3, result.Tables.Single(t => t.Name == "frozen-lm").Rows.Count);
            var decision = result.Tables.Single(t => t.Name == "decision");
            var testPrompts = ShapesWorldDataset.Load(world.WorldFolder).DecisionPrompts(ShapesSplit.Test);
            Assert.AreEqual(testPrompts.Count(p => p.Label == ShapesDecision.Retrieve) / (double)testPrompts.Count, decision.Cell("always retrieve", "accuracy")!.Mean, 1e-9,
                "always-retrieve accuracy is the share of retrieve prompts");

            using var json = JsonDocument.Parse(File.ReadAllText(result.ResultsPath));
            Assert.AreEqual(8, json.RootElement.GetProperty("tables").GetArrayLength());
            Assert.IsTrue(json.RootElement.GetProperty("total_seconds").GetDouble() > 0);

            // The cache is only read.
            foreach (var (file, stamp) in cacheStamp) Assert.AreEqual(stamp, File.GetLastWriteTimeUtc(file), file);
            Assert.AreEqual(cacheStamp.Count, Directory.GetFiles(world.CacheDirectory, "*", SearchOption.AllDirectories).Length, "no file was added to the cache");
        }
        finally
        {
            torch.set_num_threads(saved);
            if (Directory.Exists(root)) Directory.Delete(root, true);
        }
    }
}
