using Gill.ML.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Generation;

[TestClass]
public sealed class ImageTensorIOTests
{
    [TestMethod]
    public void PngRoundTripQuantizesTo8Bits()
    {
        using var scope = torch.NewDisposeScope();
        using var gen = new torch.Generator(11, torch.CPU);
        var img = torch.rand(new long[] { 3, 5, 7 }, generator: gen);
        var decoded = ImageTensorIO.FromEncodedBytes(ImageTensorIO.ToPngBytes(img));
        CollectionAssert.AreEqual(new long[] { 3, 5, 7 }, decoded.shape);
        Fixtures.AssertClose(img.mul(255).round().div(255), decoded, "PNG round trip", rel: 1e-6);
        Assert.IsTrue(decoded.sub(img).abs().max().item<float>() <= 0.5f / 255 + 1e-6f);
    }

    [TestMethod]
    public void OutOfRangeValuesAreClampedAndBatchOfOneAccepted()
    {
        using var scope = torch.NewDisposeScope();
        var img = torch.tensor(new float[] { -1f, 2f, 0.5f, float.NaN, 0f, 1f }, new long[] { 1, 3, 1, 2 });
        var decoded = ImageTensorIO.FromEncodedBytes(ImageTensorIO.ToPngBytes(img));
        CollectionAssert.AreEqual(new[] { 0f, 1f, 128f / 255, 0f, 0f, 1f }, decoded.data<float>().ToArray());
    }

    [TestMethod]
    public void SavePngIsAtomicAndOverwrites()
    {
        using var scope = torch.NewDisposeScope();
        var dir = Path.Combine(Path.GetTempPath(), "gill-io-" + Guid.NewGuid().ToString("N"));
        try
        {
            var path = Path.Combine(dir, "sub", "a.png");
            ImageTensorIO.SavePng(torch.zeros(3, 4, 4), path);
            ImageTensorIO.SavePng(torch.ones(3, 2, 6), path);
            var loaded = ImageTensorIO.Load(path);
            CollectionAssert.AreEqual(new long[] { 3, 2, 6 }, loaded.shape);
            Assert.AreEqual(1f, loaded.min().item<float>());
            CollectionAssert.AreEqual(new[] { "a.png" }, Directory.GetFiles(Path.Combine(dir, "sub")).Select(Path.GetFileName).ToArray(), "no temporary files left");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void MLImageRoundTrip()
    {
        using var scope = torch.NewDisposeScope();
        using var gen = new torch.Generator(12, torch.CPU);
        var img = torch.rand(new long[] { 3, 4, 6 }, generator: gen);
        using var ml = ImageTensorIO.ToMLImage(img);
        Assert.AreEqual(6, ml.Width);
        Assert.AreEqual(4, ml.Height);
        Fixtures.AssertClose(img.mul(255).round().div(255), ImageTensorIO.FromMLImage(ml), "MLImage round trip", rel: 1e-6);
    }

    [TestMethod]
    public void BadInputIsNamed()
    {
        using var scope = torch.NewDisposeScope();
        var ex = Assert.ThrowsExactly<ArgumentException>(() => ImageTensorIO.ToPngBytes(torch.zeros(4, 2, 2)));
        StringAssert.Contains(ex.Message, "[4,2,2]");
        Assert.ThrowsExactly<ArgumentException>(() => ImageTensorIO.ToPngBytes(torch.zeros(new long[] { 3, 2, 2 }, ScalarType.Int64)));
        Assert.ThrowsExactly<InvalidDataException>(() => ImageTensorIO.FromEncodedBytes(new byte[] { 1, 2, 3, 4 }, "junk"));
        Assert.ThrowsExactly<FileNotFoundException>(() => ImageTensorIO.Load("/nonexistent/x.png"));
    }
}
