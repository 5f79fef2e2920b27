using Gill.ML.Evaluation;
using Gill.ML.Evaluation.Lpips;
using Gill.ML.Serialization;
using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Evaluation;

[TestClass]
public class LpipsTests
{
    private static string FixtureModel => Path.Combine(Fixtures.Dir("lpips-alex"), "model.safetensors");

    [TestMethod]
    public void AlexDistanceMatchesPyTorch()
    {
        var io = Fixtures.Io("lpips-alex");
        using var model = LpipsModel.Load(LpipsNet.Alex, FixtureModel);
        Assert.AreEqual(Path.Combine(Fixtures.Dir("lpips-alex"), "model.safetensors"), model.HeadsSource);
        using var d = model.Distance(io["in0"], io["in1"]);
        Fixtures.AssertClose(io["lpips"], d, "lpips");
        using var self = model.Distance(io["in0"], io["in0"]);
        Fixtures.AssertClose(io["lpips_self"], self, "lpips_self");
    }

    [TestMethod]
    public void EmbeddedHeadsEqualTheFixtureHeads()
    {
        using var ck = SafeTensorsCheckpoint.Open(FixtureModel);
        using var model = LpipsModel.CreateWithRandomTrunk(LpipsNet.Alex, 1);
        Assert.AreEqual("embedded:lpips-v0.1/alex", model.HeadsSource);
        // The fixture trunk alone: the heads now come from the embedded resource, and the distances must not change.
        var dir = Directory.CreateTempSubdirectory("gill-lpips-");
        try
        {
            var trunkOnly = Path.Combine(dir.FullName, "alex-trunk.safetensors");
            var tensors = ck.Tensors.Keys.Where(k => k.StartsWith("features.", StringComparison.Ordinal)).Select(k => KeyValuePair.Create(k, ck.Load(k))).ToList();
            SafeTensors.Save(trunkOnly, tensors);
            using var embedded = LpipsModel.Load(LpipsNet.Alex, trunkOnly);
            Assert.AreEqual("embedded:lpips-v0.1/alex", embedded.HeadsSource);
            var io = Fixtures.Io("lpips-alex");
            Fixtures.AssertClose(io["lpips"], embedded.Distance(io["in0"], io["in1"]), "lpips with embedded heads");
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [TestMethod]
    public void TrunkKeyLayoutsAllLoad()
    {
        var io = Fixtures.Io("lpips-alex");
        using var ck = SafeTensorsCheckpoint.Open(FixtureModel);
        var dir = Directory.CreateTempSubdirectory("gill-lpips-keys-");
        try
        {
            // torchvision alexnet(...).features.state_dict(): keys without the "features." prefix.
            var bare = Path.Combine(dir.FullName, "bare.safetensors");
            SafeTensors.Save(bare, ck.Tensors.Keys.Where(k => k.StartsWith("features.", StringComparison.Ordinal))
                .Select(k => KeyValuePair.Create(k["features.".Length..], ck.Load(k))));
            // The lpips package's own names: net.slice1.0.weight … net.slice5.10.weight.
            int Slice(int layer) => layer switch { < 2 => 1, < 5 => 2, < 8 => 3, < 10 => 4, _ => 5 };
            var lp = Path.Combine(dir.FullName, "lpips.safetensors");
            SafeTensors.Save(lp, ck.Tensors.Keys.Where(k => k.StartsWith("features.", StringComparison.Ordinal))
                .Select(k =>
                {
                    var parts = k.Split('.');
                    return KeyValuePair.Create($"net.slice{Slice(int.Parse(parts[1]))}.{parts[1]}.{parts[2]}", ck.Load(k));
                }));
            // A whole torchvision model: features.* plus classifier.* (ignored).
            var whole = Path.Combine(dir.FullName, "whole.safetensors");
            SafeTensors.Save(whole, ck.Tensors.Keys.Where(k => k.StartsWith("features.", StringComparison.Ordinal))
                .Select(k => KeyValuePair.Create(k, ck.Load(k))).Append(KeyValuePair.Create("classifier.1.weight", torch.zeros(4, 4))));
            foreach (var path in new[] { bare, lp, whole })
            {
                using var model = LpipsModel.Load(LpipsNet.Alex, path);
                Fixtures.AssertClose(io["lpips"], model.Distance(io["in0"], io["in1"]), Path.GetFileName(path));
            }
            var wrong = Path.Combine(dir.FullName, "wrong.safetensors");
            SafeTensors.Save(wrong, new[] { KeyValuePair.Create("encoder.weight", torch.zeros(2)) });
            StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => LpipsModel.Load(LpipsNet.Alex, wrong)).Message, "no trunk weights in a known layout");
            // A VGG file given for the Alex trunk: a shape error that names the key.
            StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => LpipsModel.Load(LpipsNet.Vgg, bare)).Message, "Shape mismatch for '0.weight'");
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [TestMethod]
    public void VggAndSqueezeTrunksHaveTorchvisionKeysAndRun()
    {
        var expected = new Dictionary<LpipsNet, (string Key, long[] Shape)[]>
        {
            [LpipsNet.Vgg] = new[] { ("features.0.weight", new long[] { 64, 3, 3, 3 }), ("features.28.weight", new long[] { 512, 512, 3, 3 }), ("features.14.bias", new long[] { 256 }) },
            [LpipsNet.Squeeze] = new[] { ("features.0.weight", new long[] { 64, 3, 3, 3 }), ("features.3.squeeze.weight", new long[] { 16, 64, 1, 1 }), ("features.12.expand3x3.weight", new long[] { 256, 64, 3, 3 }) },
        };
        foreach (var (net, keys) in expected)
        {
            using var model = LpipsModel.CreateWithRandomTrunk(net, 3, new LpipsOptions { ResizeTo = null });
            using var trunk = LpipsTrunk.Create(net);
            var sd = trunk.state_dict();
            foreach (var (k, s) in keys) CollectionAssert.AreEqual(s, sd[k].shape, $"{net} {k}");
            Assert.AreEqual(net == LpipsNet.Vgg ? 26 : 50, sd.Count, $"{net} parameter count");
            torch.random.manual_seed(4);
            using var x = torch.rand(1, 3, 32, 32) * 2 - 1;
            using var y = torch.rand(1, 3, 32, 32) * 2 - 1;
            using var d = model.Distance(x, y);
            using var self = model.Distance(x, x);
            Assert.IsTrue(d.min().item<float>() > 0, $"{net} distances positive");
            Assert.AreEqual(0f, self.abs().max().item<float>(), 1e-7f, $"{net} self distance");
        }
    }

    [TestMethod]
    public void ScoringImagesResizesAndChecksPairs()
    {
        var eval = new MLContext(1).Gill().Evaluation;
        // GILL's evaluation resizes to 256; 96 keeps this test fast and exercises the same code.
        using var model = LpipsModel.Load(LpipsNet.Alex, FixtureModel, options: new LpipsOptions { BatchSize = 2, ResizeTo = 96 });
        torch.random.manual_seed(8);
        var gen = new[] { torch.rand(3, 64, 64), torch.rand(3, 80, 60), torch.rand(3, 96, 96) };
        var refs = new[] { torch.rand(3, 64, 64), torch.rand(3, 40, 50), torch.rand(3, 96, 96) };
        var m = eval.Lpips(model, gen, refs, new[] { "a", "b", "c" }, new BootstrapOptions { BootstrapResamples = 200 });
        Assert.AreEqual(3, m.N);
        Assert.IsTrue(m.Scores.All(s => s > 0));
        Assert.AreEqual(m.Scores.Average(), m.Value, 1e-12);
        Assert.IsNotNull(m.ConfidenceInterval);
        // The third pair is already 96×96: its score is the raw distance of the [−1, 1] images.
        using var raw = model.Distance((gen[2] * 2 - 1).unsqueeze(0), (refs[2] * 2 - 1).unsqueeze(0));
        Assert.AreEqual(raw.item<float>(), m.Scores[2], 1e-6);
        var df = m.ToDataFrame();
        Assert.AreEqual(3L, df.Rows.Count);
        CollectionAssert.AreEqual(new[] { "Index", "Key", "LPIPS" }, df.Columns.Select(c => c.Name).ToArray());

        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.Lpips(model, gen, refs.Take(2).ToArray())).Message, "3 generated images but 2 reference images");
        using var noResize = LpipsModel.Load(LpipsNet.Alex, FixtureModel, options: new LpipsOptions { ResizeTo = null });
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.Lpips(noResize, gen, refs)).Message, "differ in size");
        var rgba = new[] { torch.rand(4, 64, 64) };
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => eval.Lpips(model, rgba, new[] { torch.rand(3, 64, 64) })).Message, "4 channels");
    }

    [TestMethod]
    public void FoldersArePairedByFileName()
    {
        var eval = new MLContext(1).Gill().Evaluation;
        using var model = LpipsModel.Load(LpipsNet.Alex, FixtureModel);
        var tmp = Directory.CreateTempSubdirectory("gill-lpips-dirs-");
        try
        {
            var a = Directory.CreateDirectory(Path.Combine(tmp.FullName, "a")).FullName;
            var b = Directory.CreateDirectory(Path.Combine(tmp.FullName, "b")).FullName;
            torch.random.manual_seed(9);
            foreach (var n in new[] { "x.png", "y.png", "only-a.png" }) ImageFiles.SavePng(torch.rand(3, 32, 32), Path.Combine(a, n));
            foreach (var n in new[] { "x.png", "y.png", "only-b.png" }) ImageFiles.SavePng(torch.rand(3, 32, 32), Path.Combine(b, n));
            File.Copy(Path.Combine(a, "y.png"), Path.Combine(b, "y.png"), overwrite: true);
            var m = eval.LpipsFromFolders(model, a, b);
            CollectionAssert.AreEqual(new[] { "x.png", "y.png" }, m.Keys!.ToArray());
            Assert.IsTrue(m.Scores[0] > 0);
            Assert.AreEqual(0, m.Scores[1], 1e-7, "identical files");
        }
        finally
        {
            tmp.Delete(true);
        }
    }
}
