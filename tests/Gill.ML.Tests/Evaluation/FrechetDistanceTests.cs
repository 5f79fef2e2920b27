using System.Text.Json;
using Gill.ML.Evaluation;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Evaluation;

[TestClass]
public class FrechetDistanceTests
{
    private static double ExpectedFid()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir("losses"), "expected.json")));
        return doc.RootElement.GetProperty("fid").GetDouble();
    }

    [TestMethod]
    public void FidMatchesScipyOnFloat64Features()
    {
        using var a = Npy.Load(Path.Combine(Fixtures.Dir("losses"), "fid_feats_a.npy"));
        using var b = Npy.Load(Path.Combine(Fixtures.Dir("losses"), "fid_feats_b.npy"));
        Assert.AreEqual(ScalarType.Float64, a.dtype);
        var m = new MLContext(1).Gill().Evaluation.Fid(a, b);
        Fixtures.AssertLoss(ExpectedFid(), m.Value, "FID (float64 features)", rel: 1e-6);
        Assert.AreEqual(300, m.N);
        Assert.AreEqual(250, m.ReferenceCount);
        Assert.AreEqual(0.0, m.OffsetApplied);
        Assert.AreEqual(m.Value, m.MeanTerm + m.TraceTerm, 1e-9);
    }

    [TestMethod]
    public void FidFromFloat32FeaturesMatchesFixture()
    {
        var io = Fixtures.Io("losses");
        var m = new MLContext(1).Gill().Evaluation.Fid(io["fid_feats_a"], io["fid_feats_b"]);
        // The float32 copy of the features rounds each value to 24 bits: 1e-5 relative.
        Fixtures.AssertLoss(io["fid"].item<float>(), m.Value, "FID (float32 features)", rel: 1e-5);
        Fixtures.AssertLoss(ExpectedFid(), m.Value, "FID (float32 features vs float64 reference)", rel: 1e-5);
    }

    [TestMethod]
    public void StreamingStatisticsEqualOneShot()
    {
        using var a = Npy.Load(Path.Combine(Fixtures.Dir("losses"), "fid_feats_a.npy"));
        var once = FeatureStatistics.FromFeatures(a);
        using var acc = new FeatureStatisticsAccumulator(32);
        foreach (var (s, n) in new[] { (0, 7), (7, 100), (107, 1), (108, 192) }) acc.Add(a.narrow(0, s, n));
        var streamed = acc.ToStatistics();
        Assert.AreEqual(300, streamed.Count);
        for (int i = 0; i < 32; i++)
        {
            Assert.AreEqual(once.Mean[i], streamed.Mean[i], 1e-12);
            for (int j = 0; j < 32; j++) Assert.AreEqual(once.Covariance(i, j), streamed.Covariance(i, j), 1e-10);
        }
        // numpy's np.cov (N − 1) of column 0 against itself.
        var col = a.select(1, 0);
        double expectedVar = col.var().item<double>();
        Assert.AreEqual(expectedVar, once.Covariance(0, 0), 1e-12);
    }

    [TestMethod]
    public void StatisticsRoundTripThroughFileAndGiveTheSameFid()
    {
        using var a = Npy.Load(Path.Combine(Fixtures.Dir("losses"), "fid_feats_a.npy"));
        using var b = Npy.Load(Path.Combine(Fixtures.Dir("losses"), "fid_feats_b.npy"));
        var sa = FeatureStatistics.FromFeatures(a);
        var sb = FeatureStatistics.FromFeatures(b);
        var dir = Directory.CreateTempSubdirectory("gill-fid-");
        try
        {
            var path = Path.Combine(dir.FullName, "ref.stats");
            sb.Save(path, "fixture b");
            Assert.AreEqual(1, Directory.GetFiles(dir.FullName).Length, "no temporary file left behind");
            var loaded = FeatureStatistics.Load(path);
            Assert.AreEqual(sb.Count, loaded.Count);
            Assert.AreEqual(sb.Covariance(3, 5), loaded.Covariance(3, 5));
            var m = new MLContext(1).Gill().Evaluation.Fid(sa, loaded);
            Fixtures.AssertLoss(ExpectedFid(), m.Value, "FID from saved statistics", rel: 1e-6);
            Assert.IsNull(m.ConfidenceInterval);
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [TestMethod]
    public void LoadingAFileThatIsNotStatisticsNamesTheProblem()
    {
        var ex = Assert.ThrowsExactly<InvalidDataException>(() => FeatureStatistics.Load(Path.Combine(Fixtures.Dir("losses"), "io.safetensors")));
        StringAssert.Contains(ex.Message, "not a feature statistics file");
    }

    [TestMethod]
    public void FidOfASetWithItselfIsZeroAndShiftAddsTheMeanTerm()
    {
        using var a = Npy.Load(Path.Combine(Fixtures.Dir("losses"), "fid_feats_a.npy"));
        var eval = new MLContext(1).Gill().Evaluation;
        Assert.AreEqual(0, eval.Fid(a, a).Value, 1e-8);
        using var shifted = a + 0.5;
        var m = eval.Fid(a, shifted);
        Assert.AreEqual(32 * 0.25, m.Value, 1e-8, "a pure shift by 0.5 in 32 dims adds 32·0.25");
    }

    [TestMethod]
    public void RankDeficientCovariancesStayFinite()
    {
        // 5 samples in 32 dimensions: both covariances have rank 4; the product is singular.
        torch.random.manual_seed(3);
        using var a = torch.randn(5, 32, ScalarType.Float64);
        using var b = torch.randn(6, 32, ScalarType.Float64);
        var m = new MLContext(1).Gill().Evaluation.Fid(a, b);
        Assert.IsTrue(double.IsFinite(m.Value) && m.Value > 0, $"FID {m.Value}");
    }

    [TestMethod]
    public void BootstrapIntervalIsSeededAndContainsTheValue()
    {
        using var a = Npy.Load(Path.Combine(Fixtures.Dir("losses"), "fid_feats_a.npy"));
        using var b = Npy.Load(Path.Combine(Fixtures.Dir("losses"), "fid_feats_b.npy"));
        var eval = new MLContext(1).Gill().Evaluation;
        var o = new FidOptions { BootstrapResamples = 5, Seed = 7 };
        var m1 = eval.Fid(a, b, o);
        var m2 = eval.Fid(a, b, o);
        Assert.IsNotNull(m1.ConfidenceInterval);
        Assert.AreEqual(m1.ConfidenceInterval, m2.ConfidenceInterval);
        Assert.IsTrue(m1.ConfidenceInterval.Value.Lower < m1.ConfidenceInterval.Value.Upper);
        Assert.AreEqual(3L, m1.ToDataFrame().Rows.Count);
    }

    [TestMethod]
    public void BadInputsGiveClearMessages()
    {
        var eval = new MLContext(1).Gill().Evaluation;
        using var one = torch.ones(1, 4);
        using var two = torch.randn(3, 4);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.Fid(one, two)).Message, "at least 2 generated");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.Fid(two, one)).Message, "at least 2 reference");
        using var other = torch.randn(3, 5);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.Fid(two, other)).Message, "dimensions differ");
        using var nan = torch.randn(3, 4);
        nan[1, 2] = torch.tensor(float.NaN);
        var ex = Assert.ThrowsExactly<ArgumentException>(() => eval.Fid(nan, two));
        StringAssert.Contains(ex.Message, "NaN");
        StringAssert.Contains(ex.Message, "row 1, column 2");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.Fid(new[] { new float[] { 1, 2 }, new float[] { 1 } }, new[] { new float[] { 1, 2 }, new float[] { 3, 4 } })).Message, "row 1");
    }

    [TestMethod]
    public void KidIsNearZeroForTheSameDistributionAndPositiveForAShift()
    {
        torch.random.manual_seed(11);
        using var a = torch.randn(400, 16);
        using var b = torch.randn(400, 16);
        using var c = torch.randn(400, 16) + 1.0;
        var eval = new MLContext(1).Gill().Evaluation;
        var o = new KidOptions { Subsets = 10, SubsetSize = 100, BootstrapResamples = 100 };
        var same = eval.Kid(a, b, o);
        var shifted = eval.Kid(a, c, o);
        Assert.AreEqual(10, same.SubsetValues.Count);
        Assert.AreEqual(100, same.SubsetSize);
        Assert.IsTrue(Math.Abs(same.Value) < 0.05, $"KID of one distribution {same.Value}");
        Assert.IsTrue(shifted.Value > 10 * Math.Abs(same.Value) && shifted.Value > 0.1, $"KID of shifted sets {shifted.Value}");
        Assert.AreEqual(same.Value, eval.Kid(a, b, o).Value, "seeded subsets repeat");
        Assert.IsNotNull(same.ConfidenceInterval);
    }

    [TestMethod]
    public void KidMatchesTheUnbiasedFormulaOnOneFullSubset()
    {
        // One subset that takes every sample: the estimator is the plain unbiased MMD², computed here by loops.
        var x = new[] { new float[] { 0.1f, 0.2f }, new float[] { -0.3f, 0.5f }, new float[] { 0.7f, -0.1f } };
        var y = new[] { new float[] { 0.0f, 0.4f }, new float[] { 0.2f, 0.2f }, new float[] { -0.5f, -0.6f } };
        double K(float[] p, float[] q) => Math.Pow((p[0] * (double)q[0] + p[1] * (double)q[1]) / 2 + 1, 3);
        double sxx = 0, syy = 0, sxy = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
            {
                if (i != j) { sxx += K(x[i], x[j]); syy += K(y[i], y[j]); }
                sxy += K(x[i], y[j]);
            }
        double expected = sxx / 6 + syy / 6 - 2 * sxy / 9;
        var m = new MLContext(1).Gill().Evaluation.Kid(x, y, new KidOptions { Subsets = 1, SubsetSize = 3, BootstrapResamples = 0 });
        Assert.AreEqual(expected, m.Value, 1e-6);
    }
}
