using System.Text.Json.Nodes;
using Gill.ML.Modules.Clip;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

[TestClass]
public class ClipVisionEncoderTests
{
    private const string Fixture = "clip-vision-tiny";

    private static void AssertVisionParity(ClipVisionEncoder encoder)
    {
        var io = Fixtures.Io(Fixture);
        using var o = encoder.Forward(io["pixel_values"]);
        Fixtures.AssertClose(io["last_hidden_state"], o.LastHiddenState, "last_hidden_state");
        Fixtures.AssertClose(io["pooler_output"], o.PooledFeatures, "pooler_output");
        Fixtures.AssertClose(io["image_embeds"], o.ImageEmbeddings!, "image_embeds");
        Fixtures.AssertClose(io["penultimate_hidden_state"], o.PenultimateHiddenState, "penultimate_hidden_state");
        Assert.IsNull(o.HiddenStates);
        using var all = encoder.Forward(io["pixel_values"], outputHiddenStates: true);
        Assert.AreEqual(3, all.HiddenStates!.Count);
        Fixtures.AssertClose(io["penultimate_hidden_state"], all.HiddenStates[1], "hidden_states[-2]");
        Fixtures.AssertClose(io["last_hidden_state"], all.HiddenStates[2], "hidden_states[-1]");
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void VisionModelWithProjection_MatchesPyTorch()
    {
        using var encoder = ClipVisionEncoder.Load(Fixtures.Dir(Fixture));
        Assert.IsTrue(encoder.HasProjection);
        Assert.AreEqual(32, encoder.PooledFeatureSize);
        Assert.AreEqual(16, encoder.EmbeddingSize);
        Assert.IsFalse(encoder.IsTrainable);
        Assert.IsTrue(encoder.Parameters().All(p => !p.requires_grad));
        AssertVisionParity(encoder);
    }

    [TestMethod]
    public void PooledFeaturesAndImageEmbeddings_AreTheTwoFeatureSpaces()
    {
        using var encoder = ClipVisionEncoder.Load(Fixtures.Dir(Fixture));
        var io = Fixtures.Io(Fixture);
        using var pooled = encoder.GetPooledFeatures(io["pixel_values"]);
        using var embeds = encoder.GetImageEmbeddings(io["pixel_values"]);
        CollectionAssert.AreEqual(new long[] { 3, 32 }, pooled.shape);
        CollectionAssert.AreEqual(new long[] { 3, 16 }, embeds.shape);
        Fixtures.AssertClose(io["pooler_output"], pooled, "pooler_output");
        Fixtures.AssertClose(io["image_embeds"], embeds, "image_embeds");
        Assert.IsFalse(pooled.requires_grad);
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void LoadsVisionTowerFromFullClipModelCheckpoint()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("clip");
        ClipTempFolder.WriteFullClip(folder);
        using var encoder = ClipVisionEncoder.Load(folder);
        AssertVisionParity(encoder);
    }

    [TestMethod]
    public void LoadsFp16Checkpoint_IntoFloat32AndFloat16()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("fp16");
        var tensors = SafeTensors.LoadAll(Path.Combine(Fixtures.Dir(Fixture), "model.safetensors"));
        var half = tensors.ToDictionary(kv => kv.Key, kv => kv.Value.is_floating_point() ? kv.Value.to(ScalarType.Float16) : kv.Value.clone());
        foreach (var t in tensors.Values) t.Dispose();
        ClipTempFolder.Write(folder, ClipTempFolder.ReadConfig(Fixture), half);

        var io = Fixtures.Io(Fixture);
        using (var encoder = ClipVisionEncoder.Load(folder))
        {
            Assert.AreEqual(ScalarType.Float32, encoder.DType);
            using var o = encoder.Forward(io["pixel_values"]);
            // fp16 weights: compare at fp16 precision.
            Fixtures.AssertClose(io["pooler_output"], o.PooledFeatures, "pooler_output (fp16 weights)", rel: 1e-2);
            Fixtures.AssertClose(io["image_embeds"], o.ImageEmbeddings!, "image_embeds (fp16 weights)", rel: 1e-2);
        }
        using (var encoder = ClipVisionEncoder.Load(folder, new ClipLoadOptions { DType = ScalarType.BFloat16 }))
        {
            Assert.AreEqual(ScalarType.BFloat16, encoder.DType);
            using var o = encoder.Forward(io["pixel_values"]);
            Assert.AreEqual(ScalarType.BFloat16, o.PooledFeatures.dtype);
            Fixtures.AssertClose(io["image_embeds"], o.ImageEmbeddings!, "image_embeds (bf16)", rel: 5e-2);
        }
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void VisionModelWithoutProjection_HasPooledFeaturesOnly()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("noproj");
        var tensors = SafeTensors.LoadAll(Path.Combine(Fixtures.Dir(Fixture), "model.safetensors"));
        tensors.Remove("visual_projection.weight", out var proj);
        proj!.Dispose();
        ClipTempFolder.Write(folder, ClipTempFolder.ReadConfig(Fixture), tensors);
        using var encoder = ClipVisionEncoder.Load(folder);
        Assert.IsFalse(encoder.HasProjection);
        var io = Fixtures.Io(Fixture);
        using var o = encoder.Forward(io["pixel_values"]);
        Assert.IsNull(o.ImageEmbeddings);
        Fixtures.AssertClose(io["pooler_output"], o.PooledFeatures, "pooler_output");
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => encoder.GetImageEmbeddings(io["pixel_values"]));
        StringAssert.Contains(e.Message, "visual_projection");
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void MissingKey_IsNamed()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("missing");
        var tensors = SafeTensors.LoadAll(Path.Combine(Fixtures.Dir(Fixture), "model.safetensors"));
        tensors.Remove("vision_model.encoder.layers.1.mlp.fc2.bias", out var t0);
        t0!.Dispose();
        ClipTempFolder.Write(folder, ClipTempFolder.ReadConfig(Fixture), tensors);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ClipVisionEncoder.Load(folder));
        StringAssert.Contains(e.Message, "vision_model.encoder.layers.1.mlp.fc2.bias");
        StringAssert.Contains(e.Message, "[32]");
    }

    [TestMethod]
    public void WrongShape_NamesKeyAndShapes()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("shape");
        var tensors = SafeTensors.LoadAll(Path.Combine(Fixtures.Dir(Fixture), "model.safetensors"));
        tensors["vision_model.pre_layrnorm.weight"].Dispose();
        tensors["vision_model.pre_layrnorm.weight"] = torch.ones(31);
        ClipTempFolder.Write(folder, ClipTempFolder.ReadConfig(Fixture), tensors);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ClipVisionEncoder.Load(folder));
        StringAssert.Contains(e.Message, "vision_model.pre_layrnorm.weight");
        StringAssert.Contains(e.Message, "expected [32]");
        StringAssert.Contains(e.Message, "found [31]");
    }

    [TestMethod]
    public void UnexpectedKey_InVisionOnlyFolder_IsNamed()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("extra");
        var tensors = SafeTensors.LoadAll(Path.Combine(Fixtures.Dir(Fixture), "model.safetensors"));
        tensors["vision_model.extra.weight"] = torch.ones(2);
        ClipTempFolder.Write(folder, ClipTempFolder.ReadConfig(Fixture), tensors);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ClipVisionEncoder.Load(folder));
        StringAssert.Contains(e.Message, "vision_model.extra.weight");
    }

    [TestMethod]
    public void UnknownModelType_AndMissingFiles_NameThePath()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("bert");
        var config = ClipTempFolder.ReadConfig(Fixture);
        config["model_type"] = "bert";
        ClipTempFolder.WriteConfig(folder, config);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ClipVisionEncoder.Load(folder));
        StringAssert.Contains(e.Message, "'bert'");
        StringAssert.Contains(e.Message, Path.Combine(folder, "config.json"));

        var textType = tmp.Sub("text");
        File.Copy(Path.Combine(Fixtures.Dir("clip-text-tiny"), "config.json"), Path.Combine(textType, "config.json"));
        e = Assert.ThrowsExactly<InvalidDataException>(() => ClipVisionEncoder.Load(textType));
        StringAssert.Contains(e.Message, "clip_text_model");

        var noWeights = tmp.Sub("noweights");
        File.Copy(Path.Combine(Fixtures.Dir(Fixture), "config.json"), Path.Combine(noWeights, "config.json"));
        var f = Assert.ThrowsExactly<FileNotFoundException>(() => ClipVisionEncoder.Load(noWeights));
        StringAssert.Contains(f.Message, noWeights);

        var empty = tmp.Sub("empty");
        f = Assert.ThrowsExactly<FileNotFoundException>(() => ClipVisionEncoder.Load(empty));
        StringAssert.Contains(f.Message, empty);

        var d = Assert.ThrowsExactly<DirectoryNotFoundException>(() => ClipVisionEncoder.Load(Path.Combine(tmp.Path, "nope")));
        StringAssert.Contains(d.Message, "nope");
    }

    [TestMethod]
    public void BadPixelShape_IsRejected()
    {
        using var encoder = ClipVisionEncoder.Load(Fixtures.Dir(Fixture));
        using var x = torch.zeros(1, 3, 31, 32);
        var e = Assert.ThrowsExactly<ArgumentException>(() => encoder.Forward(x));
        StringAssert.Contains(e.Message, "[B, 3, 32, 32]");
        StringAssert.Contains(e.Message, "[1, 3, 31, 32]");
    }

    [TestMethod]
    public void SaveAndLoad_RoundTrips_AndKeepsPositionIdsLayout()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("saved");
        using (var encoder = ClipVisionEncoder.Load(Fixtures.Dir(Fixture)))
            encoder.Save(folder);
        Assert.IsTrue(File.Exists(Path.Combine(folder, "preprocessor_config.json")));
        using (var ck = SafeTensorsCheckpoint.Open(folder))
        {
            using var original = SafeTensorsCheckpoint.Open(Fixtures.Dir(Fixture));
            CollectionAssert.AreEquivalent(original.Tensors.Keys.ToList(), ck.Tensors.Keys.ToList());
            using var ids = ck.Load("vision_model.embeddings.position_ids");
            Assert.AreEqual(ScalarType.Int64, ids.dtype);
            Assert.AreEqual(16L, ids[0, 16].item<long>());
        }
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!;
        Assert.AreEqual("clip_vision_model", config["model_type"]!.GetValue<string>());
        using var reloaded = ClipVisionEncoder.Load(folder);
        AssertVisionParity(reloaded);
    }

    [TestMethod]
    public void RandomlyCreated_IsDeterministicPerSeed_AndTrainable()
    {
        var config = new ClipVisionConfig { HiddenSize = 16, IntermediateSize = 32, NumHiddenLayers = 1, NumAttentionHeads = 2, ImageSize = 8, PatchSize = 4, ProjectionDim = 8, HiddenAct = "gelu" };
        using var a = ClipVisionEncoder.Create(config, seed: 7);
        using var b = ClipVisionEncoder.Create(config, seed: 7);
        using var x = torch.randn(2, 3, 8, 8);
        using var ea = a.GetImageEmbeddings(x);
        using var eb = b.GetImageEmbeddings(x);
        Assert.IsTrue(ea.equal(eb).all().item<bool>());
        a.SetTrainable(true);
        using var o = a.Forward(x);
        using var loss = o.ImageEmbeddings!.sum();
        loss.backward();
        Assert.IsTrue(a.Parameters().All(p => p.grad is not null));
    }

    [TestMethod]
    public void RepeatedInference_DoesNotLeakTensors()
    {
        using var encoder = ClipVisionEncoder.Load(Fixtures.Dir(Fixture));
        using var x = torch.randn(2, 3, 32, 32);
        using (var o = encoder.Forward(x)) { }
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 5; i++)
        {
            using var o = encoder.Forward(x);
            using var e = encoder.GetImageEmbeddings(x);
        }
        Assert.AreEqual(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
