using Gill.ML.Evaluation;
using Gill.ML.Evaluation.Plots;
using SkiaSharp;

namespace Gill.ML.Tests.EvaluationWorld;

[TestClass]
public sealed class MetricPlotsTests
{
    private static (int W, int H, int Colours) Decode(string path)
    {
        using var bmp = SKBitmap.Decode(path) ?? throw new AssertFailedException($"'{path}' is not a decodable PNG.");
        var colours = new HashSet<uint>();
        for (int y = 0; y < bmp.Height; y += 2)
            for (int x = 0; x < bmp.Width; x += 2) colours.Add((uint)bmp.GetPixel(x, y));
        return (bmp.Width, bmp.Height, colours.Count);
    }

    [TestMethod]
    public void ChartsAreWrittenAtomicallyAsDecodablePngs()
    {
        var dir = Directory.CreateTempSubdirectory("gill-plots-");
        try
        {
            var bars = new[]
            {
                PlotBar.WithStd("identical", 0.01, 0.005),
                PlotBar.WithStd("recoloured", 0.21, 0.04),
                PlotBar.WithInterval("moved", 0.12, new ConfidenceInterval(0.1, 0.15, 0.95, 1000, 42)),
                PlotBar.Plain("baseline", 0.3),
            };
            var barPath = Path.Combine(dir.FullName, "bars.png");
            MetricPlots.SaveBarChart(barPath, bars, new ChartOptions { Title = "ResNet-18 perceptual distance", YLabel = "1 - cos", Footnote = ResNet18Features.Backbone });
            var (w, h, colours) = Decode(barPath);
            Assert.AreEqual((640, 400), (w, h));
            Assert.IsTrue(colours > 4, "bars, axes and background are drawn");

            var rounds = new PlotSeries("R@1", new double[] { 1, 3, 5, 7, 9 }, new double[] { 0.2, 0.35, 0.5, 0.55, 0.6 });
            var flat = new PlotSeries("chance", new double[] { 1, 9 }, new double[] { 0.1, 0.1 });
            var linePath = Path.Combine(dir.FullName, "rounds.png");
            MetricPlots.SaveLineChart(linePath, new[] { rounds, flat }, new ChartOptions { Title = "Recall vs dialogue rounds", XLabel = "rounds", YLabel = "R@1", Width = 500, Height = 300, YFromZero = true });
            var line = Decode(linePath);
            Assert.AreEqual((500, 300), (line.W, line.H));

            var loss = PlotSeries.FromValues("loss", Enumerable.Range(0, 200).Select(i => 3.0 * Math.Exp(-i / 50.0) + 0.1).ToArray());
            var lossPath = Path.Combine(dir.FullName, "loss.png");
            MetricPlots.SaveLossCurves(lossPath, new[] { loss });
            Assert.IsTrue(Decode(lossPath).Colours > 2);
            // Overwrite in place; nothing but the three charts is left in the folder.
            MetricPlots.SaveLossCurves(lossPath, new[] { loss, PlotSeries.FromValues("constant", new double[] { 1, 1, 1 }) });
            CollectionAssert.AreEquivalent(new[] { "bars.png", "rounds.png", "loss.png" }, Directory.GetFiles(dir.FullName).Select(Path.GetFileName).ToArray());

            var html = MetricPlots.ToHtmlImage(File.ReadAllBytes(barPath), "bars <1>");
            StringAssert.StartsWith(html, "<img alt=\"bars &lt;1&gt;\" src=\"data:image/png;base64,iVBOR");
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [TestMethod]
    public void BadChartInputIsNamed()
    {
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => MetricPlots.BarChart(Array.Empty<PlotBar>())).Message, "at least one bar");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => MetricPlots.BarChart(new[] { PlotBar.Plain("x", double.NaN) })).Message, "'x'");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => MetricPlots.LineChart(new[] { new PlotSeries("s", new double[] { 1, 2 }, new double[] { 1 }) })).Message, "2 X values but 1 Y values");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => MetricPlots.LineChart(new[] { new PlotSeries("e", Array.Empty<double>(), Array.Empty<double>()) })).Message, "'e' is empty");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => MetricPlots.SaveBarChart(Path.Combine(Path.GetTempPath(), "chart.jpg"), new[] { PlotBar.Plain("x", 1) })).Message, "does not end in .png");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => MetricPlots.BarChart(new[] { PlotBar.Plain("x", 1) }, new ChartOptions { Width = 10 }));
    }

    [TestMethod]
    public void TicksAreNiceAndCoverTheRange()
    {
        CollectionAssert.AreEqual(new[] { 0.0, 0.2, 0.4, 0.6, 0.8, 1.0 }, MetricPlots.Ticks(0, 1).Select(t => Math.Round(t, 10)).ToArray());
        var t = MetricPlots.Ticks(-3.2, 47);
        Assert.IsTrue(t.All(x => x >= -3.2 && x <= 47) && t.Count is >= 4 and <= 12, string.Join(",", t));
        var (lo, hi) = MetricPlots.Expand(2, 2);
        Assert.IsTrue(lo < 2 && hi > 2);
    }
}
