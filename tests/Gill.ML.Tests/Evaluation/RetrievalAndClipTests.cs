using Gill.ML.Evaluation;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Evaluation;

internal static class Rows
{
    public static float[][] Of(Tensor t)
    {
        var f = t.to(ScalarType.Float32).contiguous();
        long d = f.shape[1];
        var data = f.data<float>().ToArray();
        return Enumerable.Range(0, (int)f.shape[0]).Select(i => data.AsSpan((int)(i * d), (int)d).ToArray()).ToArray();
    }
}

[TestClass]
public class ClipSimilarityTests
{
    [TestMethod]
    public void CosinePerRowMatchesFixture()
    {
        var io = Fixtures.Io("losses");
        var m = new MLContext(1).Gill().Evaluation.ClipSimilarity(Rows.Of(io["clip_a"]), Rows.Of(io["clip_b"]));
        using var actual = torch.tensor(m.Scores.ToArray());
        Fixtures.AssertClose(io["clip_sim"], actual, "clip_sim");
        Assert.AreEqual(io["clip_sim"].mean().item<float>(), m.Value, 1e-6);
        Assert.AreEqual(4, m.N);
    }

    [TestMethod]
    public void DataViewColumnsGiveTheSameScores()
    {
        var io = Fixtures.Io("losses");
        var a = Rows.Of(io["clip_a"]);
        var b = Rows.Of(io["clip_b"]);
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(a.Select((x, i) => new Pair { Id = $"ex{i}", Generated = x, Reference = b[i] }));
        var m = ml.Gill().Evaluation.ClipSimilarity(data, nameof(Pair.Generated), nameof(Pair.Reference), nameof(Pair.Id));
        var direct = ml.Gill().Evaluation.ClipSimilarity(a, b);
        CollectionAssert.AreEqual(direct.Scores.ToArray(), m.Scores.ToArray());
        CollectionAssert.AreEqual(new[] { "ex0", "ex1", "ex2", "ex3" }, m.Keys!.ToArray());
        Assert.AreEqual(direct.ConfidenceInterval, m.ConfidenceInterval, "same seed, same interval");
        var summary = m.ToSummaryDataFrame();
        Assert.AreEqual("ClipSimilarity", summary.Columns["Metric"][0]);
        Assert.AreEqual(m.Value, (double)summary.Columns["Value"][0]!);
    }

    [TestMethod]
    public void ImageEmbedderPathAndErrors()
    {
        // A stand-in embedder: mean colour per channel. Identical images → similarity 1.
        var embedder = new DelegateImageEmbedder(images => torch.stack(images.Select(i => i.mean(new long[] { 1, 2 })).ToArray()));
        var eval = new MLContext(1).Gill().Evaluation;
        torch.random.manual_seed(2);
        var gen = new[] { torch.rand(3, 8, 8), torch.rand(3, 16, 12) };
        var m = eval.ClipSimilarity(embedder, gen, gen.Select(g => g.clone()).ToArray());
        Assert.AreEqual(1.0, m.Value, 1e-6);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.ClipSimilarity(embedder, gen, gen.Take(1).ToArray())).Message, "2 generated images but 1 reference images");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.ClipSimilarity(new[] { new float[] { 1, float.NaN } }, new[] { new float[] { 1, 2 } })).Message, "non-finite");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.ClipSimilarity(Array.Empty<float[]>(), Array.Empty<float[]>())).Message, "empty");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.ClipSimilarity(new[] { new float[] { 1, 2 } }, new[] { new float[] { 1, 2, 3 } })).Message, "sizes differ");
        var ml = new MLContext(1);
        var empty = ml.Data.LoadFromEnumerable(Array.Empty<Pair>());
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => ml.Gill().Evaluation.ClipSimilarity(empty, nameof(Pair.Generated), nameof(Pair.Reference))).Message, "has no rows");
    }

    private sealed class Pair
    {
        public string Id { get; set; } = "";
        [VectorType(16)] public float[] Generated { get; set; } = Array.Empty<float>();
        [VectorType(16)] public float[] Reference { get; set; } = Array.Empty<float>();
    }
}

[TestClass]
public class RecallAtKTests
{
    [TestMethod]
    public void RecallMatchesFixture()
    {
        var io = Fixtures.Io("losses");
        var gt = io["gt"].data<long>().Select(x => (int)x).ToArray();
        var m = new MLContext(1).Gill().Evaluation.RecallAtK(Rows.Of(io["queries"]), Rows.Of(io["gallery"]), gt);
        Assert.AreEqual(io["recall_at_1"].item<float>(), m.Recall[1], 1e-6);
        Assert.AreEqual(io["recall_at_5"].item<float>(), m.Recall[5], 1e-6);
        Assert.AreEqual(io["recall_at_10"].item<float>(), m.Recall[10], 1e-6);
        Assert.AreEqual(20, m.N);
        Assert.AreEqual(50, m.GallerySize);
        Assert.AreEqual(3L, m.ToSummaryDataFrame().Rows.Count);
    }

    // Gallery images g0 = (1,0), g1 = (0.8,0.6), g2 = (0,1), g3 = (−1,0).
    // Text q0 = (1,0): scores 1, 0.8, 0, −1; positive g2, g0 excluded → only g1 (0.8) is above g2 (0): rank 2.
    // Text q1 = (0,1): scores 0, 0.6, 1, 0; positives g0 and g3 (both 0) → g1 and g2 above: rank 3.
    private static readonly float[][] Images = { new[] { 1f, 0f }, new[] { 0.8f, 0.6f }, new[] { 0f, 1f }, new[] { -1f, 0f } };
    private static readonly float[][] Texts = { new[] { 1f, 0f }, new[] { 0f, 1f } };
    private static readonly int[][] Positives = { new[] { 2 }, new[] { 0, 3 } };
    private static readonly int[][] Excluded = { new[] { 0 }, Array.Empty<int>() };

    [TestMethod]
    public void MultiplePositivesAndExclusions()
    {
        var m = new MLContext(1).Gill().Evaluation.RecallAtK(Texts, Images, Positives, Excluded, options: new RecallAtKOptions { Ks = new[] { 1, 2, 3 } });
        CollectionAssert.AreEqual(new[] { 2, 3 }, m.Ranks.ToArray());
        Assert.AreEqual(0, m.Recall[1]);
        Assert.AreEqual(0.5, m.Recall[2]);
        Assert.AreEqual(1, m.Recall[3]);
        Assert.AreEqual(0, m.Value);
        var noExclusion = new MLContext(1).Gill().Evaluation.RecallAtK(Texts, Images, Positives, null, options: new RecallAtKOptions { Ks = new[] { 1 } });
        Assert.AreEqual(3, noExclusion.Ranks[0], "g0 (1) and g1 (0.8) are above g2 once g0 is a candidate");
    }

    [TestMethod]
    public void ImageToTextInvertsPositivesAndExclusions()
    {
        // Image queries: g0 → positives {q1}, excluded {q0}: rank 1. g1 has no text: skipped.
        // g2 → {q0}: scores q0 0, q1 1 → rank 2. g3 → {q1}: scores q0 −1, q1 0 → rank 1.
        var m = new MLContext(1).Gill().Evaluation.RecallAtK(Texts, Images, Positives, Excluded, RetrievalDirection.ImageToText, new RecallAtKOptions { Ks = new[] { 1 } });
        CollectionAssert.AreEqual(new[] { 0, 2, 3 }, m.QueryIndices.ToArray());
        CollectionAssert.AreEqual(new[] { 1, 2, 1 }, m.Ranks.ToArray());
        Assert.AreEqual(2.0 / 3, m.Recall[1], 1e-12);
    }

    [TestMethod]
    public void DataViewsAndErrors()
    {
        var ml = new MLContext(1);
        var texts = ml.Data.LoadFromEnumerable(Texts.Select((t, i) => new TextRow { Embedding = t, Positives = Positives[i].Select(p => (long)p).ToArray(), Excluded = Excluded[i] }));
        var images = ml.Data.LoadFromEnumerable(Images.Select(e => new ImageRow { Embedding = e }));
        var m = ml.Gill().Evaluation.RecallAtK(texts, nameof(TextRow.Embedding), nameof(TextRow.Positives), images, nameof(ImageRow.Embedding), nameof(TextRow.Excluded),
            options: new RecallAtKOptions { Ks = new[] { 2 } });
        CollectionAssert.AreEqual(new[] { 2, 3 }, m.Ranks.ToArray());
        var eval = ml.Gill().Evaluation;
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => eval.RecallAtK(Texts, Images, new[] { 7, 0 })).Message, "outside the 4 images");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.RecallAtK(Texts, Images, new[] { 1 })).Message, "ground truth for 1");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.RecallAtK(Texts, Images, new[] { new[] { 0 }, new[] { 1 } }, new[] { new[] { 0 }, Array.Empty<int>() })).Message, "also excluded");
    }

    private sealed class TextRow
    {
        [VectorType(2)] public float[] Embedding { get; set; } = Array.Empty<float>();
        [VectorType] public long[] Positives { get; set; } = Array.Empty<long>();
        [VectorType] public int[] Excluded { get; set; } = Array.Empty<int>();
    }

    private sealed class ImageRow
    {
        [VectorType(2)] public float[] Embedding { get; set; } = Array.Empty<float>();
    }
}
