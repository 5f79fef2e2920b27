using Gill.ML.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Evaluation;

[TestClass]
public class ImageFilesTests
{
    [TestMethod]
    public void PngRoundTripIsExactAt8Bits()
    {
        var dir = Directory.CreateTempSubdirectory("gill-img-");
        try
        {
            torch.random.manual_seed(12);
            using var img = torch.rand(3, 7, 5);
            var path = Path.Combine(dir.FullName, "x.png");
            ImageFiles.SavePng(img, path);
            using var back = ImageFiles.LoadRgb(path);
            CollectionAssert.AreEqual(new long[] { 3, 7, 5 }, back.shape, "channels first, height 7, width 5");
            using var expected = (img * 255).round() / 255;
            Assert.IsTrue(back.allclose(expected, rtol: 0, atol: 1e-6), "8-bit quantised values come back exactly");
            CollectionAssert.AreEqual(new[] { path }, ImageFiles.List(dir.FullName).ToArray());
            File.WriteAllText(Path.Combine(dir.FullName, "notes.txt"), "not an image");
            Assert.AreEqual(1, ImageFiles.List(dir.FullName).Count, "non-image files are not listed");
            var fake = Path.Combine(dir.FullName, "broken.png");
            File.WriteAllText(fake, "not a png");
            StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => ImageFiles.LoadRgb(fake)).Message, "broken.png");
            StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => ImageFiles.PairByName(dir.FullName, Directory.CreateDirectory(Path.Combine(dir.FullName, "empty")).FullName)).Message, "No image file name is shared");
        }
        finally
        {
            dir.Delete(true);
        }
    }
}
