using Gill.ML.Evaluation;
using Gill.ML.Evaluation.ClipSimilarity;
using Gill.ML.Generation;
using Gill.ML.Imaging;
using Gill.ML.Modules.Clip;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Evaluation;

[TestClass]
public sealed class ClipImageEmbedderTests
{
    [TestMethod]
    public void EmbedsLikeTheVisionTowerAndScoresFolders()
    {
        var dir = Path.Combine(Path.GetTempPath(), "gill-clipsim-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var scope = torch.NewDisposeScope();
            torch.manual_seed(5);
            var images = Enumerable.Range(0, 3).Select(_ => torch.rand(3, 40, 36)).ToList();
            using var embedder = ClipImageEmbedder.Load(Fixtures.Dir("clip-vision-tiny"));
            var emb = embedder.Embed(images);
            CollectionAssert.AreEqual(new long[] { 3, 16 }, emb.shape);

            // Same result as quantising to 8 bits and running the tower's own preprocessing + projection.
            using var vision = ClipVisionEncoder.Load(Fixtures.Dir("clip-vision-tiny"));
            var rgb = images.Select(t => new RgbImage(36, 40, (t * 255).round().to(ScalarType.Byte).permute(1, 2, 0).contiguous().bytes)).ToList();
            using var o = vision.Forward(vision.Preprocessor.Preprocess(rgb));
            Fixtures.AssertClose(o.ImageEmbeddings!, emb, "projected embeddings");

            // Folders paired by name: identical folders give similarity 1; shuffled pairs less.
            Directory.CreateDirectory(Path.Combine(dir, "a"));
            Directory.CreateDirectory(Path.Combine(dir, "b"));
            for (int i = 0; i < 3; i++)
            {
                ImageTensorIO.SavePng(images[i], Path.Combine(dir, "a", $"{i}.png"));
                ImageTensorIO.SavePng(images[i], Path.Combine(dir, "b", $"{i}.png"));
            }
            var eval = new MLContext(1).Gill().Evaluation;
            var same = eval.ClipSimilarityFromFolders(embedder, Path.Combine(dir, "a"), Path.Combine(dir, "b"));
            Assert.AreEqual(1.0, same.Value, 1e-5);
            ImageTensorIO.SavePng(images[1], Path.Combine(dir, "b", "0.png"));
            var different = eval.ClipSimilarityFromFolders(embedder, Path.Combine(dir, "a"), Path.Combine(dir, "b"));
            Assert.IsTrue(different.Value < same.Value - 1e-4, $"{different.Value} should be below {same.Value}");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void WrongImageShapeIsAClearError()
    {
        using var embedder = ClipImageEmbedder.Load(Fixtures.Dir("clip-vision-tiny"));
        var e = Assert.ThrowsExactly<ArgumentException>(() => embedder.Embed(new[] { torch.rand(1, 8, 8) }));
        StringAssert.Contains(e.Message, "[3, H, W]");
    }
}
