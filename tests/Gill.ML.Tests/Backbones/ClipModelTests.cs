using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using Gill.ML.Modules.Clip;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

[TestClass]
public class ClipModelTests
{
    private static ClipConfig Tiny => new()
    {
        Vision = new ClipVisionConfig { HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 2, ImageSize = 16, PatchSize = 8 },
        Text = new ClipTextConfig { VocabSize = 40, HiddenSize = 12, IntermediateSize = 20, NumHiddenLayers = 2, NumAttentionHeads = 3, MaxPositionEmbeddings = 8, EosTokenId = 39, BosTokenId = 38, PadTokenId = 39 },
        ProjectionDim = 10,
    };

    private static Tensor Ids() => torch.tensor(new long[] { 38, 5, 6, 39, 39, 39, 38, 7, 8, 9, 10, 39, 38, 39, 39, 39 }, [4, 4]);

    [TestMethod]
    public void FullCheckpoint_LoadsAsClipModel_AndMatchesBothFixtures()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("clip");
        ClipTempFolder.WriteFullClip(folder);
        using var model = ClipModel.Load(folder);
        var vio = Fixtures.Io("clip-vision-tiny");
        var tio = Fixtures.Io("clip-text-tiny");
        using (var v = model.Vision.Forward(vio["pixel_values"]))
            Fixtures.AssertClose(vio["image_embeds"], v.ImageEmbeddings!, "image_embeds");
        using (var t = model.Text.Forward(tio["input_ids"]))
            Fixtures.AssertClose(tio["text_embeds"], t.TextEmbeddings!, "text_embeds");
        Assert.AreEqual(2.6592f, model.LogitScale.item<float>(), 1e-6f);
        foreach (var x in vio.Values.Concat(tio.Values)) x.Dispose();
    }

    [TestMethod]
    public void Forward_ComputesHuggingFaceContrastiveLogitsAndLoss()
    {
        using var model = ClipModel.Create(Tiny, seed: 3);
        using var pixels = torch.randn(4, 3, 16, 16);
        using var ids = Ids();
        using var o = model.Forward(pixels, ids);
        using var img = model.Vision.GetImageEmbeddings(pixels);
        using var txt = model.Text.GetTextEmbeddings(ids);
        using var imgN = img / img.norm(1, true, 2);
        using var txtN = txt / txt.norm(1, true, 2);
        using var expected = txtN.matmul(imgN.t()) * Math.Exp(2.6592);
        Fixtures.AssertClose(expected, o.LogitsPerText, "logits_per_text");
        Fixtures.AssertClose(expected.t(), o.LogitsPerImage, "logits_per_image");
        // Symmetric cross-entropy by hand.
        double ce(Tensor logits)
        {
            var l = logits.to(ScalarType.Float64);
            var lse = l.logsumexp(1);
            var diag = l.diagonal();
            return (lse - diag).mean().item<double>();
        }
        double loss = (ce(expected) + ce(expected.t())) / 2;
        Fixtures.AssertLoss(loss, o.Loss.item<float>(), "clip loss", rel: 1e-5);
    }

    [TestMethod]
    public void Training_UpdatesEveryParameter_IncludingLogitScale()
    {
        using var model = ClipModel.Create(Tiny, seed: 5);
        Assert.IsTrue(model.Parameters().All(p => !p.requires_grad), "frozen by default");
        model.SetTrainable(true);
        using var pixels = torch.randn(4, 3, 16, 16);
        using var ids = Ids();
        using var opt = torch.optim.AdamW(model.Parameters(), lr: 1e-2);
        float first = 0, last = 0;
        for (int step = 0; step < 3; step++)
        {
            using var scope = torch.NewDisposeScope();
            opt.zero_grad();
            using var o = model.Forward(pixels, ids);
            o.Loss.backward();
            Assert.IsTrue(model.Parameters().All(p => p.grad is not null), "every parameter gets a gradient");
            opt.step();
            if (step == 0) first = o.Loss.item<float>();
            last = o.Loss.item<float>();
        }
        Assert.IsTrue(last < first, $"loss went from {first} to {last}");
        Assert.AreNotEqual(2.6592f, model.LogitScale.item<float>());
    }

    [TestMethod]
    public void SaveLoad_RoundTrip_AndTowersLoadSeparately()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("pretrained");
        using var pixels = torch.randn(2, 3, 16, 16);
        using var ids = Ids();
        using var model = ClipModel.Create(Tiny, seed: 11);
        model.SetTrainable(true);
        using (var noGrad = torch.no_grad()) model.LogitScale.add_(0.25);
        model.Save(folder);
        Assert.IsFalse(Directory.EnumerateFiles(folder, "*.tmp").Any(), "no temporary files left");
        Assert.IsTrue(File.Exists(Path.Combine(folder, "preprocessor_config.json")));
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!;
        Assert.AreEqual("clip", config["model_type"]!.GetValue<string>());
        Assert.AreEqual(10, config["projection_dim"]!.GetValue<int>());

        using var reloaded = ClipModel.Load(folder);
        Assert.IsFalse(reloaded.IsTrainable);
        Assert.AreEqual(model.LogitScale.item<float>(), reloaded.LogitScale.item<float>());
        var a = model.Module.state_dict();
        var b = reloaded.Module.state_dict();
        CollectionAssert.AreEquivalent(a.Keys.ToList(), b.Keys.ToList());
        foreach (var (k, v) in a) Assert.IsTrue(v.equal(b[k]).all().item<bool>(), k);

        using var vision = ClipVisionEncoder.Load(folder);
        using var text = ClipTextEncoder.Load(folder);
        using var e1 = model.Vision.GetImageEmbeddings(pixels);
        using var e2 = vision.GetImageEmbeddings(pixels);
        Assert.IsTrue(e1.allclose(e2, 0, 0));
        using var t1 = model.Text.GetTextEmbeddings(ids);
        using var t2 = text.GetTextEmbeddings(ids);
        Assert.IsTrue(t1.allclose(t2, 0, 0));
        Assert.AreEqual(16, vision.Preprocessor.Options.CropHeight);
    }

    [TestMethod]
    public void LoadOptions_DTypeAndDevice_Apply()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("m");
        using (var model = ClipModel.Create(Tiny, seed: 1)) model.Save(folder);
        using var half = ClipModel.Load(folder, new ClipLoadOptions { DType = ScalarType.BFloat16, Device = torch.CPU });
        Assert.IsTrue(half.Parameters().All(p => p.dtype == ScalarType.BFloat16));
        Assert.AreEqual(DeviceType.CPU, half.Device.type);
        Assert.ThrowsExactly<ArgumentException>(() => ClipModel.Load(folder, new ClipLoadOptions { DType = ScalarType.Int32 }));
        using var vision = ClipVisionEncoder.Load(folder);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ClipModel.Load(Fixtures.Dir("clip-vision-tiny")));
        StringAssert.Contains(e.Message, "clip_vision_model");
    }

    [TestMethod]
    public void VitLargePatch14_CheckpointLayout_MatchesApprovedList()
    {
        List<string> lines;
        torch.set_default_device(torch.META);
        try
        {
            lines = ClipModel.DescribeCheckpoint(ClipConfig.VitLargePatch14).ToList();
        }
        finally
        {
            torch.set_default_device(torch.CPU);
        }
        var approvedPath = Path.Combine(SourceDir(), "..", "Approvals", "clip-vit-large-patch14.approved.txt");
        var approved = File.ReadAllLines(approvedPath).Where(l => l.Length > 0).ToList();
        if (!approved.SequenceEqual(lines))
        {
            File.WriteAllLines(Path.ChangeExtension(approvedPath, null).Replace(".approved", ".received") + ".txt", lines);
            var missing = approved.Except(lines).Take(5);
            var extra = lines.Except(approved).Take(5);
            Assert.Fail($"CLIP ViT-L/14 checkpoint layout changed ({lines.Count} entries, approved {approved.Count}). Missing: {string.Join("; ", missing)}. New: {string.Join("; ", extra)}.");
        }
        Assert.AreEqual(592, lines.Count);
        Assert.AreEqual(DeviceType.CPU, torch.get_default_device().type);
    }

    private static string SourceDir([CallerFilePath] string path = "") => Path.GetDirectoryName(path)!;
}
