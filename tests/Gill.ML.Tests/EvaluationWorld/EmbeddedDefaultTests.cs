using Gill.ML.Evaluation;
using Gill.ML.World;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.EvaluationWorld;

/// <summary>FD-ResNet18 and the ResNet-18 perceptual distance on rendered shapes-world scenes.</summary>
[TestClass]
public sealed class EmbeddedDefaultTests
{
    private static ResNet18Features? _features;

    private static ResNet18Features Features => _features ??= ResNet18Features.Load();

    [ClassCleanup]
    public static void Cleanup()
    {
        _features?.Dispose();
        _features = null;
    }

    private static GillEvaluationCatalog Eval => new Microsoft.ML.MLContext(seed: 1).Gill().Evaluation;

    /// <summary>Single-object scenes cycling through shapes, colours and positions.</summary>
    private static List<ShapesScene> Scenes(int n)
    {
        var shapes = Enum.GetValues<ShapeKind>();
        var colors = Enum.GetValues<ShapeColor>();
        var positions = Enum.GetValues<ShapePosition>();
        return Enumerable.Range(0, n).Select(i => new ShapesScene(ShapesBackground.Black,
            [new ShapesObject(shapes[i % 5], colors[(i / 5 + i) % colors.Length], i % 2 == 0 ? ShapeSize.Large : ShapeSize.Small, positions[(i / 3) % positions.Length])])).ToList();
    }

    private static ShapesScene Recolour(ShapesScene s)
    {
        var o = s.Objects[0];
        var colors = Enum.GetValues<ShapeColor>();
        return s with { Objects = [o with { Color = colors[(Array.IndexOf(colors, o.Color) + 3) % colors.Length] }] };
    }

    private static Tensor Render(ShapesScene s) => torch.tensor(ShapesRenderer.RenderPixels(s, 32), new long[] { 3, 32, 32 });

    [TestMethod]
    public void FrechetResNet18IsZeroForASetWithItselfAndGrowsWhenColoursChange()
    {
        using var scope = torch.NewDisposeScope();
        var scenes = Scenes(16);
        var reference = scenes.Select(Render).ToList();
        var recoloured = scenes.Select(s => Render(Recolour(s))).ToList();
        var eval = Eval;

        var referenceFeatures = Features.Embed(reference);
        var self = eval.FrechetResNet18(referenceFeatures, referenceFeatures.clone());
        var changed = eval.FrechetResNet18(Features, recoloured, reference);
        Assert.AreEqual(512, Features.Dimension);
        CollectionAssert.AreEqual(new long[] { 16, 512 }, referenceFeatures.shape);
        Assert.AreEqual(16, self.N);
        Assert.IsTrue(Math.Abs(self.Value) < 1e-6 * Math.Max(1, changed.Value), $"FD of a set with itself should be ~0, got {self.Value}");
        Assert.IsTrue(changed.Value > 1.0, $"recoloured renders should be far from the references, got {changed.Value}");
        Assert.IsTrue(changed.Distance.MeanTerm > 0);

        var frame = changed.ToDataFrame();
        Assert.AreEqual("FD-ResNet18", frame["Metric"][0]);
        Assert.AreEqual(ResNet18Features.Backbone, frame["Backbone"][0]);
        StringAssert.Contains((string)frame["Backbone"][0]!, "not comparable to published FID/LPIPS");
        Assert.AreEqual(ResNet18Features.Backbone, changed.ToSummaryDataFrame()["Backbone"][0]);
        StringAssert.Contains(changed.ToString(), "embedded default");
    }

    [TestMethod]
    public void PerceptualDistanceIsZeroForIdenticalImagesAndPositiveForChangedOnes()
    {
        using var scope = torch.NewDisposeScope();
        var scenes = Scenes(6);
        var reference = scenes.Select(Render).ToList();
        var same = scenes.Select(Render).ToList();
        var moved = scenes.Select(s => Render(s with { Objects = [s.Objects[0] with { Position = s.Objects[0].Position == ShapePosition.Left ? ShapePosition.Right : ShapePosition.Left }] })).ToList();
        var keys = scenes.Select((_, i) => $"{i:D3}.png").ToList();
        var eval = Eval;

        var identical = eval.ResNet18PerceptualDistance(Features, same, reference, keys);
        var changed = eval.ResNet18PerceptualDistance(Features, moved, reference, keys);
        Assert.AreEqual(6, identical.N);
        foreach (var d in identical.Scores) Assert.IsTrue(d >= 0 && d < 1e-6, $"identical images: distance {d}");
        foreach (var d in changed.Scores) Assert.IsTrue(d > 1e-3, $"moved object: distance {d}");
        Assert.IsTrue(changed.Value > identical.Value + 0.01);
        Assert.IsNotNull(changed.ConfidenceInterval);

        var frame = changed.ToDataFrame();
        CollectionAssert.AreEqual(new[] { "Index", "Key", ResNet18PerceptualMetrics.Name, "Backbone" }, frame.Columns.Select(c => c.Name).ToArray());
        Assert.AreEqual(ResNet18Features.Backbone, frame["Backbone"][5]);
        Assert.AreEqual(ResNet18Features.Backbone, changed.ToSummaryDataFrame()["Backbone"][0]);
    }

    [TestMethod]
    public void FoldersGiveTheSameNumbersAsTensors()
    {
        var dir = Directory.CreateTempSubdirectory("gill-embedded-");
        try
        {
            using var scope = torch.NewDisposeScope();
            var scenes = Scenes(4);
            var a = Directory.CreateDirectory(Path.Combine(dir.FullName, "a")).FullName;
            var b = Directory.CreateDirectory(Path.Combine(dir.FullName, "b")).FullName;
            for (int i = 0; i < scenes.Count; i++)
            {
                File.WriteAllBytes(Path.Combine(a, $"{i:D3}.png"), ShapesRenderer.RenderPng(Recolour(scenes[i]), 32));
                File.WriteAllBytes(Path.Combine(b, $"{i:D3}.png"), ShapesRenderer.RenderPng(scenes[i], 32));
            }
            var eval = Eval;
            var fromFolders = eval.ResNet18PerceptualDistanceFromFolders(Features, a, b);
            var ga = Features.Embed(scenes.Select(s => Render(Recolour(s))).ToList());
            var gb = Features.Embed(scenes.Select(Render).ToList());
            var fromTensors = eval.ResNet18PerceptualDistance(ResNet18Features.ToRows(ga), ResNet18Features.ToRows(gb));
            CollectionAssert.AreEqual(Enumerable.Range(0, 4).Select(i => $"{i:D3}.png").ToArray(), fromFolders.Keys!.ToArray());
            Assert.AreEqual(fromTensors.Value, fromFolders.Value, 1e-5);
            var fd = eval.FrechetResNet18FromFolders(Features, a, b);
            var fdT = eval.FrechetResNet18(ga, gb);
            Assert.AreEqual(fdT.Value, fd.Value, 1e-3 * Math.Max(1, fdT.Value));

            var empty = Directory.CreateDirectory(Path.Combine(dir.FullName, "empty")).FullName;
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.FrechetResNet18FromFolders(Features, empty, b)).Message, "'" + empty + "' has 0");
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.ResNet18PerceptualDistanceFromFolders(Features, empty, b)).Message, "No image file name is shared");
            Assert.ThrowsExactly<DirectoryNotFoundException>(() => eval.FrechetResNet18FromFolders(Features, Path.Combine(dir.FullName, "missing"), b));
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [TestMethod]
    public void BadInputIsRejectedWithClearMessages()
    {
        using var scope = torch.NewDisposeScope();
        var eval = Eval;
        var three = Scenes(3).Select(Render).ToList();
        var two = three.Take(2).ToList();
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.ResNet18PerceptualDistance(Features, three, two)).Message, "3 generated images but 2 reference images");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.ResNet18PerceptualDistance(Features, new List<Tensor>(), new List<Tensor>())).Message, "at least one pair");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.FrechetResNet18(Features, three.Take(1).ToList(), three)).Message, "at least 2 generated images");
        var gray = new List<Tensor> { torch.rand(1, 32, 32), torch.rand(1, 32, 32) };
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.FrechetResNet18(Features, gray, two)).Message, "1 channels");
        var big = new List<Tensor> { torch.rand(3, 8, 8) * 255, torch.rand(3, 8, 8) };
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.ResNet18PerceptualDistance(Features, big, two)).Message, "expected [0, 1]");
        Assert.ThrowsExactly<FileNotFoundException>(() => ResNet18Features.Load(Path.Combine(Path.GetTempPath(), "no-such-models-folder")));
    }
}

/// <summary>The low-rank Fréchet form against the FID code (eigen-decompositions of D × D matrices).</summary>
[TestClass]
public sealed class LowRankFrechetTests
{
    [TestMethod]
    [DataRow(12, 20, 64)]
    [DataRow(30, 30, 64)]
    [DataRow(5, 64, 64)]
    public void MatchesTheFullFrechetDistance(int n1, int n2, int d)
    {
        using var scope = torch.NewDisposeScope();
        torch.random.manual_seed(n1 * 100 + n2);
        var a = torch.randn(n1, d) * 2 + 0.5;
        var b = torch.randn(n2, d).matmul(torch.randn(d, d) * 0.3) - 0.2;
        var eval = new Microsoft.ML.MLContext(seed: 1).Gill().Evaluation;
        var full = eval.Fid(a, b);
        var low = eval.FrechetResNet18(a, b);
        Assert.AreEqual(full.Value, low.Value, 1e-6 * Math.Max(1, full.Value), $"low-rank {low.Value} vs full {full.Value}");
        Assert.AreEqual(full.MeanTerm, low.Distance.MeanTerm, 1e-9 * Math.Max(1, full.MeanTerm));
        Assert.AreEqual(full.TraceTerm, low.Distance.TraceTerm, 1e-6 * Math.Max(1, Math.Abs(full.TraceTerm)));
        var self = eval.FrechetResNet18(a, a.clone());
        Assert.IsTrue(Math.Abs(self.Value) < 1e-8 * Math.Max(1, full.Value), $"self distance {self.Value}");
        var withCi = eval.FrechetResNet18(a, b, new FidOptions { BootstrapResamples = 20, Seed = 3 });
        Assert.IsNotNull(withCi.ConfidenceInterval);
        Assert.AreEqual(withCi.ConfidenceInterval, eval.FrechetResNet18(a, b, new FidOptions { BootstrapResamples = 20, Seed = 3 }).ConfidenceInterval, "seeded");
    }
}
