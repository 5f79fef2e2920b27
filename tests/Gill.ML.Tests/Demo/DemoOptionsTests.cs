using Gill.ML.Evaluation.Demo;

namespace Gill.ML.Tests.Demo;

[TestClass]
public sealed class DemoOptionsTests
{
    [TestMethod]
    public void ScaleUpFlagsReachThePretrainingOptions()
    {
        var p = DemoRunner.PretrainOptions(new DemoOptions { Seed = 4, WorldImages = 1234, ImageSize = 48, PretrainStepsScale = 2 });
        Assert.AreEqual(1234, p.World.Images.Train);
        Assert.AreEqual(48, p.World.ImageSize);
        Assert.AreEqual(2.0, p.StepsScale);
        Assert.AreEqual(4, p.Seed);
        var quick = DemoRunner.PretrainOptions(new DemoOptions { Quick = true, PretrainStepsScale = 0.5 });
        Assert.AreEqual(0.5, quick.StepsScale);
        var defaults = DemoRunner.PretrainOptions(new DemoOptions());
        Assert.AreEqual(new Gill.ML.World.Pretraining.WorldPretrainOptions().World.Images.Train, defaults.World.Images.Train);
    }

    [TestMethod]
    public void ReportLinksThePaperResultsBesideIt()
    {
        string root = Path.Combine(Path.GetTempPath(), "gill-demo-paper-" + Guid.NewGuid().ToString("N"));
        try
        {
            string outDir = Path.Combine(root, "gill-demo"), paper = Path.Combine(root, "gill-paper");
            Directory.CreateDirectory(outDir);
            string missing = DemoReport.PaperSection(outDir, null);
            StringAssert.Contains(missing, "gill eval paper --cache CACHE");
            Directory.CreateDirectory(paper);
            foreach (var f in new[] { "index.md", "decision.md", "decision.png", "decision.json", "stories.md" }) File.WriteAllText(Path.Combine(paper, f), "x");
            string html = DemoReport.PaperSection(outDir, null);
            StringAssert.Contains(html, "href=\"../gill-paper/index.md\"");
            StringAssert.Contains(html, "href=\"../gill-paper/decision.png\"");
            StringAssert.Contains(html, "href=\"../gill-paper/stories.md\"");
            Assert.IsFalse(html.Contains("stories.png", StringComparison.Ordinal), "only existing files are linked");
            StringAssert.Contains(DemoReport.PaperSection(Path.Combine(root, "elsewhere"), paper), "href=\"../gill-paper/index.md\"");
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, true);
        }
    }

    [TestMethod]
    public void BadScaleUpValuesAreRejectedByName()
    {
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DemoOptions { WorldImages = 0 }.Validate()).Message, "WorldImages");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DemoOptions { PretrainStepsScale = 0 }.Validate()).Message, "PretrainStepsScale");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DemoOptions { MapperDistillationEpochs = -1 }.Validate()).Message, "MapperDistillationEpochs");
    }
}
