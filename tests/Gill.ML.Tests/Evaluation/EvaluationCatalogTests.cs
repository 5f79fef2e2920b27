using Gill.ML.Evaluation;
using Microsoft.ML;
using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Evaluation;

[TestClass]
public class EvaluationCatalogTests
{
    [TestMethod]
    public void FidAndKidOverDataViewFeatureColumns()
    {
        var io = Fixtures.Io("losses");
        var ml = new MLContext(1);
        var a = ml.Data.LoadFromEnumerable(Rows.Of(io["fid_feats_a"]).Select(f => new FeatureRow { Features = f }));
        var b = ml.Data.LoadFromEnumerable(Rows.Of(io["fid_feats_b"]).Select(f => new FeatureRow { Features = f }));
        var m = ml.Gill().Evaluation.Fid(a, b, nameof(FeatureRow.Features));
        Fixtures.AssertLoss(io["fid"].item<float>(), m.Value, "FID over data views", rel: 1e-5);
        var kid = ml.Gill().Evaluation.Kid(a, b, nameof(FeatureRow.Features), options: new KidOptions { Subsets = 5, SubsetSize = 100 });
        Assert.AreEqual(5, kid.SubsetValues.Count);
        Assert.AreEqual(5L, kid.ToDataFrame().Rows.Count);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Gill().Evaluation.Fid(a, b, "Nope")).Message, "'Nope' is not in the data view");
        var text = ml.Data.LoadFromEnumerable(new[] { new { Features = "x" } }.Select(r => new TextRow { Features = r.Features }));
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Gill().Evaluation.Fid(text, b, nameof(FeatureRow.Features))).Message, "must be a vector of Single");
    }

    [TestMethod]
    public void LpipsScoringDoesNotLeakTensors()
    {
        using var model = LpipsModel.Load(LpipsNet.Alex, Path.Combine(Fixtures.Dir("lpips-alex"), "model.safetensors"), options: new LpipsOptions { ResizeTo = 64 });
        torch.random.manual_seed(1);
        var gen = new[] { torch.rand(3, 64, 64), torch.rand(3, 32, 32) };
        var refs = new[] { torch.rand(3, 64, 64), torch.rand(3, 48, 48) };
        model.Score(gen, refs);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) model.Score(gen, refs);
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Assert.AreEqual(before, after, "live tensors after repeated LPIPS scoring");
    }

    [TestMethod]
    public void BootstrapIsSeededAndConfigurable()
    {
        var eval = new MLContext(1).Gill().Evaluation;
        var rng = new Random(5);
        var a = Enumerable.Range(0, 30).Select(_ => Enumerable.Range(0, 8).Select(_ => (float)rng.NextDouble()).ToArray()).ToArray();
        var b = Enumerable.Range(0, 30).Select(_ => Enumerable.Range(0, 8).Select(_ => (float)rng.NextDouble()).ToArray()).ToArray();
        var m1 = eval.ClipSimilarity(a, b, options: new ClipSimilarityOptions { Seed = 3 });
        var m2 = eval.ClipSimilarity(a, b, options: new ClipSimilarityOptions { Seed = 3 });
        var m3 = eval.ClipSimilarity(a, b, options: new ClipSimilarityOptions { Seed = 4, BootstrapResamples = 500, ConfidenceLevel = 0.9 });
        var off = eval.ClipSimilarity(a, b, options: new ClipSimilarityOptions { BootstrapResamples = 0 });
        Assert.AreEqual(m1.ConfidenceInterval, m2.ConfidenceInterval);
        Assert.AreNotEqual(m1.ConfidenceInterval, m3.ConfidenceInterval);
        Assert.AreEqual(500, m3.ConfidenceInterval!.Value.Resamples);
        Assert.AreEqual(0.9, m3.ConfidenceInterval!.Value.Level);
        Assert.IsNull(off.ConfidenceInterval);
        var ci = m1.ConfidenceInterval!.Value;
        Assert.IsTrue(ci.Lower < m1.Value && m1.Value < ci.Upper, $"{ci} around {m1.Value}");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => eval.ClipSimilarity(a, b, options: new ClipSimilarityOptions { ConfidenceLevel = 1.5 }));
        var df = m1.ToDataFrame();
        Assert.AreEqual(30L, df.Rows.Count);
        Assert.AreEqual(1L, m1.ToSummaryDataFrame().Rows.Count);
    }

    private sealed class FeatureRow
    {
        [VectorType(32)] public float[] Features { get; set; } = Array.Empty<float>();
    }

    private sealed class TextRow
    {
        public string Features { get; set; } = "";
    }
}
