using System.Text.Json;
using Gill.ML.Evaluation.Paper;

namespace Gill.ML.Tests.Paper;

[TestClass]
public sealed class PaperTableTests
{
    private static string NewDir() => Path.Combine(Path.GetTempPath(), "gill-paper-table-" + Guid.NewGuid().ToString("N"));

    [TestMethod]
    public void CellIsTheMeanAndSampleStandardDeviation()
    {
        var c = PaperCell.Of([0.5, 0.6, 0.7, 0.8, 0.9]);
        Assert.AreEqual(0.7, c.Mean, 1e-12);
        Assert.AreEqual(Math.Sqrt(0.1 / 4), c.Std, 1e-12); // Σ(x−μ)² = 0.1, n − 1 = 4
        Assert.AreEqual(5, c.N);
        Assert.AreEqual("0.700 ± 0.158", c.Format());
        Assert.AreEqual("0.70 ± 0.16", c.Format(2));
        var one = PaperCell.Of([0.25]);
        Assert.AreEqual(0, one.Std);
        Assert.AreEqual("0.250", one.Format(), "a single seed has no ±");
        Assert.AreEqual("n/a", PaperCell.Of([double.NaN]).Format());
        Assert.ThrowsExactly<ArgumentException>(() => PaperCell.Of([]));
    }

    private static PaperTable Sample()
    {
        var b = new PaperTableBuilder("stories", "Table 1 analogue", "CLIP 1 cap", "CLIP 5 caps");
        foreach (var v in new[] { 0.6, 0.62 }) b.Add("GILL", "CLIP 5 caps", v);
        foreach (var v in new[] { 0.5, 0.54 }) b.Add("GILL", "CLIP 1 cap", v);
        b.Add("generator | text", "CLIP 1 cap", 0.55);
        b.Notes.Add("two seeds");
        return b.Build(12.34);
    }

    [TestMethod]
    public void MarkdownHasHeaderRowsInInsertionOrderDashesAndNotes()
    {
        var md = Sample().ToMarkdown();
        var lines = md.Split('\n');
        Assert.AreEqual("## Table 1 analogue", lines[0]);
        Assert.AreEqual("|  | CLIP 1 cap | CLIP 5 caps |", lines[2]);
        Assert.AreEqual("|---|---|---|", lines[3]);
        Assert.AreEqual("| GILL | 0.520 ± 0.028 | 0.610 ± 0.014 |", lines[4]);
        Assert.AreEqual("| generator \\| text | 0.550 | – |", lines[5], "pipes are escaped, a missing cell is a dash");
        Assert.AreEqual("- two seeds", lines[7]);
    }

    [TestMethod]
    public void JsonHasNameColumnsRowsCellsWithMeanStdNValues()
    {
        var t = Sample();
        using var doc = JsonDocument.Parse(t.ToJson());
        var root = doc.RootElement;
        Assert.AreEqual("stories", root.GetProperty("name").GetString());
        Assert.AreEqual(2, root.GetProperty("columns").GetArrayLength());
        Assert.AreEqual(12.3, root.GetProperty("seconds").GetDouble(), 1e-9);
        var rows = root.GetProperty("rows");
        Assert.AreEqual(2, rows.GetArrayLength());
        var cell = rows[0].GetProperty("cells").GetProperty("CLIP 5 caps");
        Assert.AreEqual(0.61, cell.GetProperty("mean").GetDouble(), 1e-12);
        Assert.AreEqual(Math.Sqrt(0.0002), cell.GetProperty("std").GetDouble(), 1e-12);
        Assert.AreEqual(2, cell.GetProperty("n").GetInt32());
        Assert.AreEqual(2, cell.GetProperty("values").GetArrayLength());
        Assert.IsFalse(rows[1].GetProperty("cells").TryGetProperty("CLIP 5 caps", out _));
        Assert.AreEqual("two seeds", root.GetProperty("notes")[0].GetString());
        Assert.AreEqual(0.52, t.Cell("GILL", "CLIP 1 cap")!.Mean, 1e-12);
    }

    [TestMethod]
    public void SaveWritesMarkdownJsonAndPngCharts()
    {
        string dir = NewDir();
        try
        {
            foreach (var kind in new[] { PaperChartKind.Bars, PaperChartKind.Lines, PaperChartKind.LinesByRow })
            {
                var b = new PaperTableBuilder("t" + kind, "chart " + kind, "a 1", "a 2");
                for (int r = 1; r <= 3; r++)
                {
                    b.Add($"{r} rounds", "a 1", 0.1 * r);
                    b.Add($"{r} rounds", "a 2", 0.2 * r);
                }
                var files = b.Build(chart: kind, chartColumns: ["a 1", "a 2"]).Save(dir);
                Assert.AreEqual(3, files.Count);
                foreach (var f in files) Assert.IsTrue(new FileInfo(f).Length > 0, f);
                var png = File.ReadAllBytes(files[2]);
                CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png.Take(4).ToArray());
            }
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void BadTablesAreRejectedNamingTheProblem()
    {
        var b = new PaperTableBuilder("x", "x", "R@1");
        var ex = Assert.ThrowsExactly<ArgumentException>(() => b.Add("GILL", "R@5", 0.1));
        StringAssert.Contains(ex.Message, "R@5");
        Assert.ThrowsExactly<ArgumentException>(() => b.Build(), "a table without rows");
        Assert.ThrowsExactly<ArgumentException>(() => new PaperTable("x", "x", ["a", "a"], [new PaperRow("r", new Dictionary<string, PaperCell>())]));
    }

    [TestMethod]
    public void OptionsRejectZeroSeedsUnknownExperimentsAndMissingCaches()
    {
        var ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => PaperExperiments.Run(new PaperOptions { CacheDirectory = "/tmp", Seeds = 0 }));
        StringAssert.Contains(ex.Message, "Seeds");
        var ex2 = Assert.ThrowsExactly<ArgumentException>(() => PaperExperiments.Run(new PaperOptions { CacheDirectory = "/tmp", Only = ["stories", "tabel-9"] }));
        StringAssert.Contains(ex2.Message, "tabel-9");
        StringAssert.Contains(ex2.Message, "retrieved-context", "the message lists the known names");
        Assert.ThrowsExactly<ArgumentException>(() => PaperExperiments.Run(new PaperOptions()), "no cache folder given");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => PaperExperiments.Run(new PaperOptions { CacheDirectory = "/tmp", Steps = 0 }));

        string missing = NewDir();
        var ex3 = Assert.ThrowsExactly<DirectoryNotFoundException>(() => PaperExperiments.Run(new PaperOptions { CacheDirectory = missing }));
        StringAssert.Contains(ex3.Message, missing);

        string partial = NewDir();
        try
        {
            Directory.CreateDirectory(Path.Combine(partial, "world"));
            File.WriteAllText(Path.Combine(partial, "world", "world.json"), "{}");
            Directory.CreateDirectory(Path.Combine(partial, "lm"));
            File.WriteAllText(Path.Combine(partial, "lm", "config.json"), "{}");
            var ex4 = Assert.ThrowsExactly<DirectoryNotFoundException>(() => PaperExperiments.Run(new PaperOptions { CacheDirectory = partial, OutputDirectory = Path.Combine(partial, "..", "out-unused") }));
            foreach (var entry in new[] { "model.safetensors", "clip-text", "image-encoder", "generator", "classifier" })
                StringAssert.Contains(ex4.Message, entry);
            Assert.IsFalse(ex4.Message.Contains("world.json", StringComparison.Ordinal), "present entries are not listed");
        }
        finally
        {
            Directory.Delete(partial, true);
        }
    }

    [TestMethod]
    public void QuickModeDefaultsAndSelection()
    {
        var o = new PaperOptions { CacheDirectory = "/tmp", Quick = true };
        o.Validate();
        CollectionAssert.AreEqual(PaperOptions.ExperimentNames.ToArray(), o.SelectedExperiments().ToArray());
        var only = new PaperOptions { CacheDirectory = "/tmp", Only = ["decision", "stories"] };
        CollectionAssert.AreEqual(new[] { "stories", "decision" }, only.SelectedExperiments().ToArray(), "run order, not argument order");
        Assert.AreEqual(new Gill.ML.Evaluation.Demo.DemoOptions().LearningRate, new PaperOptions().LearningRate, "hyperparameters follow the demo's");
    }
}
