using Gill.ML.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Generation;

[TestClass]
public sealed class DiffusionSchedulerTests
{
    // Stable Diffusion v1.x noise schedule.
    private static DiffusionSchedulerConfig Sd(string cls, string spacing = "leading") => new()
    {
        ClassName = cls,
        NumTrainTimesteps = 1000,
        BetaStart = 0.00085,
        BetaEnd = 0.012,
        BetaSchedule = "scaled_linear",
        SetAlphaToOne = false,
        StepsOffset = 1,
        ClipSample = false,
        SkipPrkSteps = true,
        TimestepSpacing = spacing,
    };

    [TestMethod]
    public void DdimLeadingTimestepsAndFinalAlpha()
    {
        using var ddim = new DdimScheduler(Sd("DDIMScheduler"));
        var ts = ddim.SetTimesteps(50);
        Assert.AreEqual(50, ts.Length);
        Assert.AreEqual(981, ts[0]);
        Assert.AreEqual(961, ts[1]);
        Assert.AreEqual(1, ts[^1]);
        // set_alpha_to_one false: the step past t=1 uses alphas_cumprod[0] = 1 - beta_0 = 0.99915.
        Assert.AreEqual(0.99915, ddim.FinalAlphaCumprod.item<float>(), 1e-6);
        Assert.AreEqual(ddim.AlphasCumprod[0].item<float>(), ddim.FinalAlphaCumprod.item<float>());
        // ᾱ_999 of the scaled-linear schedule.
        Assert.AreEqual(0.0046600, ddim.AlphasCumprod[999].item<float>(), 2e-6);
    }

    [TestMethod]
    public void TrailingAndLinspaceSpacings()
    {
        using var trailing = new DdimScheduler(Sd("DDIMScheduler", "trailing"));
        CollectionAssert.AreEqual(new long[] { 999, 799, 599, 399, 199 }, trailing.SetTimesteps(5));
        using var linspace = new DdimScheduler(Sd("DDIMScheduler", "linspace"));
        CollectionAssert.AreEqual(new long[] { 999, 749, 500, 250, 0 }, linspace.SetTimesteps(5));
    }

    [TestMethod]
    public void PndmRepeatsTheSecondTimestep()
    {
        using var pndm = new PndmScheduler(Sd("PNDMScheduler"));
        var ts = pndm.SetTimesteps(50);
        Assert.AreEqual(51, ts.Length);
        CollectionAssert.AreEqual(new long[] { 981, 961, 961, 941 }, ts.Take(4).ToArray());
        Assert.AreEqual(1, ts[^1]);
        CollectionAssert.AreEqual(new long[] { 801, 601, 601, 401, 201, 1 }, pndm.SetTimesteps(5));
    }

    [TestMethod]
    public void DdimStepMatchesClosedForm()
    {
        using var scope = torch.NewDisposeScope();
        using var ddim = new DdimScheduler(Sd("DDIMScheduler"));
        var ts = ddim.SetTimesteps(5);
        using var gen = new torch.Generator(3, torch.CPU);
        var x = torch.randn(new long[] { 1, 4, 3, 3 }, generator: gen);
        var eps = torch.randn(new long[] { 1, 4, 3, 3 }, generator: gen);
        foreach (var (t, prevAlpha) in new[] { (ts[0], ddim.AlphasCumprod[ts[1]].item<float>()), (ts[^1], ddim.FinalAlphaCumprod.item<float>()) })
        {
            double a = ddim.AlphasCumprod[t].item<float>(), ap = prevAlpha;
            var xd = x.to(ScalarType.Float64);
            var ed = eps.to(ScalarType.Float64);
            var x0 = (xd - Math.Sqrt(1 - a) * ed) / Math.Sqrt(a);
            var expected = Math.Sqrt(ap) * x0 + Math.Sqrt(1 - ap) * ed;
            Fixtures.AssertClose(expected, ddim.Step(eps, t, x), $"DDIM step at t={t}", rel: 1e-5);
        }
    }

    [TestMethod]
    public void PndmFirstTwoCallsUseTheAveragedNoiseFromTheStoredSample()
    {
        using var scope = torch.NewDisposeScope();
        using var pndm = new PndmScheduler(Sd("PNDMScheduler"));
        var ts = pndm.SetTimesteps(5);
        using var gen = new torch.Generator(5, torch.CPU);
        var x = torch.randn(new long[] { 1, 4, 3, 3 }, generator: gen);
        var e1 = torch.randn(new long[] { 1, 4, 3, 3 }, generator: gen);
        var e2 = torch.randn(new long[] { 1, 4, 3, 3 }, generator: gen);
        var x1 = pndm.Step(e1, ts[0], x);
        var x2 = pndm.Step(e2, ts[1], x1);
        // Second call: x_801 → x_601 with ε = (e1 + e2)/2, from the stored first sample.
        double a = pndm.AlphasCumprod[801].item<float>(), ap = pndm.AlphasCumprod[601].item<float>();
        var eps = (e1.to(ScalarType.Float64) + e2.to(ScalarType.Float64)) / 2;
        var xd = x.to(ScalarType.Float64);
        var x0 = (xd - Math.Sqrt(1 - a) * eps) / Math.Sqrt(a);
        var expected = Math.Sqrt(ap) * x0 + Math.Sqrt(1 - ap) * eps;
        Fixtures.AssertClose(expected, x2, "PNDM second call", rel: 1e-5);
    }

    [TestMethod]
    public void LoadsFixtureConfigsAndRefusesUnsupportedOnes()
    {
        var dir = Path.Combine(Fixtures.Dir("sd-onnx-tiny"), "scheduler");
        var ddim = DiffusionSchedulerConfig.Load(Path.Combine(dir, "scheduler_config.json"));
        Assert.AreEqual("DDIMScheduler", ddim.ClassName);
        Assert.AreEqual("scaled_linear", ddim.BetaSchedule);
        Assert.IsFalse(ddim.SetAlphaToOne);
        Assert.IsFalse(ddim.ClipSample);
        Assert.AreEqual(1, ddim.StepsOffset);
        var pndm = DiffusionSchedulerConfig.Load(Path.Combine(dir, "pndm_scheduler_config.json"));
        Assert.IsTrue(pndm.SkipPrkSteps);
        using (var s = DiffusionScheduler.Create(pndm)) Assert.IsInstanceOfType<PndmScheduler>(s);

        // The DDIM file read as PNDM lacks skip_prk_steps: the Runge-Kutta warm-up is refused by name.
        var asPndm = DiffusionSchedulerConfig.Load(Path.Combine(dir, "scheduler_config.json"), "PNDMScheduler");
        var ex = Assert.ThrowsExactly<NotSupportedException>(() => DiffusionScheduler.Create(asPndm));
        StringAssert.Contains(ex.Message, "skip_prk_steps");
        var ex2 = Assert.ThrowsExactly<NotSupportedException>(() => DiffusionScheduler.Create(ddim with { ClassName = "EulerDiscreteScheduler" }));
        StringAssert.Contains(ex2.Message, "EulerDiscreteScheduler");
        Assert.ThrowsExactly<FileNotFoundException>(() => DiffusionSchedulerConfig.Load(Path.Combine(dir, "missing.json")));
        using var d = new DdimScheduler(ddim);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => d.SetTimesteps(0));
    }
}
