using Gill.ML.WorldModels;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.WorldModels;

[TestClass]
public sealed class TextToImageDecoderTests
{
    private static readonly TextToImageDecoderConfig Small = new()
    {
        CondTokens = 6, CondDim = 12, ImageSize = 16, GridSize = 4, HiddenDim = 32, NumHeads = 4, NumLayers = 1, BaseChannels = 32,
    };

    [TestMethod]
    public void ForwardShapeAndRange()
    {
        torch.manual_seed(0);
        using var model = new TextToImageDecoder(Small);
        using var scope = torch.NewDisposeScope();
        var y = model.forward(torch.randn(3, 6, 12));
        CollectionAssert.AreEqual(new long[] { 3, 3, 16, 16 }, y.shape);
        Assert.IsTrue(y.min().item<float>() >= 0 && y.max().item<float>() <= 1);
    }

    [TestMethod]
    public void WrongConditioningShapeNamesExpectedShape()
    {
        using var model = new TextToImageDecoder(Small);
        var e = Assert.ThrowsExactly<ArgumentException>(() => model.forward(torch.randn(2, 5, 12)));
        StringAssert.Contains(e.Message, "[B, 6, 12]");
    }

    [TestMethod]
    public void InvalidConfigIsRejected()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new TextToImageDecoder(Small with { ImageSize = 24 }));
        StringAssert.Contains(e.Message, "image_size");
    }

    [TestMethod]
    public void LearnsAFixedMappingAndRoundTrips()
    {
        torch.manual_seed(1);
        using var model = new TextToImageDecoder(Small);
        using var cond = torch.randn(8, 6, 12);
        // Targets: each example a bright square at a different place on black.
        using var images = torch.zeros(8, 3, 16, 16);
        for (int i = 0; i < 8; i++) images[i, i % 3, TensorIndex.Slice(i, i + 6), TensorIndex.Slice(8 - i, 14 - i)] = torch.tensor(1f);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var losses = TextToImageDecoderTrainer.Train(model, cond, images, new DecoderTrainingOptions
        {
            Steps = 60, BatchSize = 8, LearningRate = 3e-3, WarmupSteps = 5, Seed = 3,
        });
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Assert.IsTrue(after - before < 10, $"live tensors grew by {after - before} over training");
        Assert.IsTrue(losses.TakeLast(5).Average() < 0.75 * losses.Take(5).Average(),
            $"loss did not fall by a quarter: first {losses.Take(5).Average():F4}, last {losses.TakeLast(5).Average():F4}");

        var dir = Path.Combine(Path.GetTempPath(), "gill-decoder-" + Guid.NewGuid().ToString("N"));
        try
        {
            model.SaveFolder(dir);
            using var loaded = TextToImageDecoder.LoadFolder(dir);
            using var a = TextToImageDecoderTrainer.Generate(model, cond);
            using var b = TextToImageDecoderTrainer.Generate(loaded, cond);
            Assert.AreEqual(0.0, (a - b).abs().max().item<float>(), 0.0);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
