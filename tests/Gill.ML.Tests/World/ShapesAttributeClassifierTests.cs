using System.Diagnostics;
using Gill.ML.World;
using TorchSharp;

namespace Gill.ML.Tests.World;

[TestClass]
public class ShapesAttributeClassifierTests
{
    public TestContext TestContext { get; set; } = null!;

    private static int threadsBefore;

    private static readonly Lazy<(ShapesAttributeClassifier Model, double Seconds, double CpuSeconds)> Trained = new(() =>
    {
        threadsBefore = torch.get_num_threads();
        var sw = Stopwatch.StartNew();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var m = ShapesAttributeClassifier.Train(new ShapesAttributeClassifier.Options { TrainImages = 1280, Epochs = 2, BatchSize = 32, LearningRate = 5e-3, Seed = 1 });
        return (m, sw.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
    });

    [ClassCleanup]
    public static void Cleanup()
    {
        if (Trained.IsValueCreated) Trained.Value.Model.Dispose();
        ShapesWorldTests.DeleteFolders();
    }

    [TestMethod]
    public void LearnsColourAndShapeWellAboveChance()
    {
        var (model, seconds, cpu) = Trained.Value;
        var m = model.EvaluateRendered(400, seed: 99);
        TestContext.WriteLine($"trained in {seconds:F1}s wall, {cpu:F1}s CPU: colour {m.ColorAccuracy:P1}, shape {m.ShapeAccuracy:P1}, both {m.ColorAndShapeAccuracy:P1}, size {m.SizeAccuracy:P1}, position {m.PositionAccuracy:P1}");
        Assert.AreEqual(400, m.Count);
        Assert.AreEqual(threadsBefore, torch.get_num_threads(), "training restores the thread count");
        Assert.IsTrue(m.ColorAccuracy > 0.9, $"colour {m.ColorAccuracy}");
        Assert.IsTrue(m.ShapeAccuracy > 0.6, $"shape {m.ShapeAccuracy} (chance 0.2)");
        Assert.IsTrue(m.ColorAndShapeAccuracy > 0.5, $"colour+shape {m.ColorAndShapeAccuracy} (chance 0.033)");
        Assert.IsTrue(m.SizeAccuracy > 0.8 && m.PositionAccuracy > 0.8, $"size {m.SizeAccuracy}, position {m.PositionAccuracy}");
    }

    [TestMethod]
    public void ReadsWorldImagesFromDiskAndJudgesHeldOutPairs()
    {
        var (model, _, _) = Trained.Value;
        var folder = ShapesWorldTests.NewFolder("clf");
        var opts = ShapesWorldTests.Small(5);
        opts.TwoObjectFraction = 0;
        opts.Images = new ShapesSplitCounts(20, 0, 0);
        var data = ShapesWorldDataset.Load(ShapesWorld.Generate(opts, folder).Folder);
        var m = model.Evaluate(data.Images(ShapesSplit.HeldOut));
        Assert.AreEqual(60, m.Count);
        Assert.IsTrue(m.ColorAndShapeAccuracy > 0.5, $"held-out colour+shape {m.ColorAndShapeAccuracy}");
    }

    [TestMethod]
    public void SaveLoadGivesSamePredictions()
    {
        var (model, _, _) = Trained.Value;
        string dir = ShapesWorldTests.NewFolder("clf-save");
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, "classifier.safetensors");
        model.Save(path);
        using var loaded = ShapesAttributeClassifier.Load(path);
        var scenes = ShapesAttributeClassifier.RandomScenes(50, 32, [.. model.Colors], [.. model.Shapes], [ShapesBackground.Black], 5);
        using var images = ShapesAttributeClassifier.RenderBatch(scenes, 32);
        CollectionAssert.AreEqual(model.Predict(images).ToList(), loaded.Predict(images).ToList());
        CollectionAssert.AreEqual(model.Colors.ToList(), loaded.Colors.ToList());

        File.WriteAllText(path + ".bad", "not a safetensors file");
        Assert.ThrowsExactly<InvalidDataException>(() => ShapesAttributeClassifier.Load(path + ".bad"));
    }

    [TestMethod]
    public void RejectsWrongImageShapeAndDoesNotLeak()
    {
        var (model, _, _) = Trained.Value;
        using var wrong = torch.zeros(2, 3, 16, 16);
        var e = Assert.ThrowsExactly<ArgumentException>(() => model.Predict(wrong));
        StringAssert.Contains(e.Message, "[2, 3, 16, 16]");
        using var ok = torch.zeros(4, 3, 32, 32);
        model.Predict(ok);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 5; i++) model.Predict(ok);
        Assert.AreEqual(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ShapesAttributeClassifier.Train(new ShapesAttributeClassifier.Options { TrainImages = 0 }));
    }
}
