using Gill.ML.Modules.Clip;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

[TestClass]
public class ClipTextEncoderTests
{
    private const string Fixture = "clip-text-tiny";

    private static void AssertTextParity(ClipTextEncoder encoder)
    {
        var io = Fixtures.Io(Fixture);
        using var o = encoder.Forward(io["input_ids"]);
        Fixtures.AssertClose(io["last_hidden_state"], o.LastHiddenState, "last_hidden_state");
        Fixtures.AssertClose(io["pooler_output"], o.PooledOutput, "pooler_output");
        Fixtures.AssertClose(io["text_embeds"], o.TextEmbeddings!, "text_embeds");
        Assert.IsNull(o.HiddenStates);
        using var all = encoder.Forward(io["input_ids"], outputHiddenStates: true);
        Assert.AreEqual(3, all.HiddenStates!.Count);
        Fixtures.AssertClose(all.HiddenStates[1], o.PenultimateHiddenState, "penultimate = hidden_states[-2]");
        Fixtures.AssertClose(io["last_hidden_state"], all.LastHiddenState, "last_hidden_state (with hidden states)");
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void TextModelWithProjection_MatchesPyTorch()
    {
        using var encoder = ClipTextEncoder.Load(Fixtures.Dir(Fixture));
        Assert.AreEqual(63L, encoder.Config.EosTokenId);
        Assert.IsTrue(encoder.HasProjection);
        Assert.IsTrue(encoder.Parameters().All(p => !p.requires_grad));
        AssertTextParity(encoder);
    }

    [TestMethod]
    public void PoolsAtFirstEos_WhenPaddedWithEos()
    {
        using var encoder = ClipTextEncoder.Load(Fixtures.Dir(Fixture));
        var io = Fixtures.Io(Fixture);
        var ids = io["input_ids"];
        using var o = encoder.Forward(ids);
        for (long b = 0; b < ids.shape[0]; b++)
        {
            var row = ids[b].data<long>().ToArray();
            int first = Array.IndexOf(row, 63L);
            Assert.IsTrue(first >= 0, "every fixture row holds an eos");
            using var expected = o.LastHiddenState[b, first];
            Fixtures.AssertClose(expected, o.PooledOutput[b], $"pooled row {b} = state at first eos {first}");
        }
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void LegacyEosId2_PoolsAtArgmaxOfIds()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("legacy");
        var config = ClipTempFolder.ReadConfig(Fixture);
        config["eos_token_id"] = 2;
        ClipTempFolder.WriteConfig(folder, config);
        File.Copy(Path.Combine(Fixtures.Dir(Fixture), "model.safetensors"), Path.Combine(folder, "model.safetensors"));
        using var encoder = ClipTextEncoder.Load(folder);
        // Ids containing 2 early and the largest id (50) later: HF pools at the argmax (position 4), not at the 2.
        using var ids = torch.tensor(new long[] { 0, 2, 7, 9, 50, 3, 3 }, [1, 7]);
        using var o = encoder.Forward(ids);
        using var expected = o.LastHiddenState[0, 4];
        Fixtures.AssertClose(expected, o.PooledOutput[0], "pooled at argmax");
    }

    [TestMethod]
    public void MissingEos_IsAClearError()
    {
        using var encoder = ClipTextEncoder.Load(Fixtures.Dir(Fixture));
        using var ids = torch.tensor(new long[] { 0, 5, 6, 63, 0, 5, 6, 7 }, [2, 4]);
        var e = Assert.ThrowsExactly<ArgumentException>(() => encoder.Forward(ids));
        StringAssert.Contains(e.Message, "row(s) 1");
        StringAssert.Contains(e.Message, "63");
    }

    [TestMethod]
    public void BadIds_AreRejected()
    {
        using var encoder = ClipTextEncoder.Load(Fixtures.Dir(Fixture));
        using var tooLong = torch.full(1, 13, 63L, dtype: ScalarType.Int64);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => encoder.Forward(tooLong)).Message, "12");
        using var outOfVocab = torch.tensor(new long[] { 0, 64, 63 }, [1, 3]);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => encoder.Forward(outOfVocab)).Message, "vocabulary");
        using var floats = torch.zeros(1, 3);
        Assert.ThrowsExactly<ArgumentException>(() => encoder.Forward(floats));
    }

    [TestMethod]
    public void Int32Ids_GiveTheSameResult()
    {
        using var encoder = ClipTextEncoder.Load(Fixtures.Dir(Fixture));
        var io = Fixtures.Io(Fixture);
        using var ids32 = io["input_ids"].to(ScalarType.Int32);
        using var o = encoder.Forward(ids32);
        Fixtures.AssertClose(io["last_hidden_state"], o.LastHiddenState, "last_hidden_state (int32 ids)");
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void LoadsTextTowerFromFullClipModelCheckpoint()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("clip");
        ClipTempFolder.WriteFullClip(folder);
        using var encoder = ClipTextEncoder.Load(folder);
        AssertTextParity(encoder);
    }

    [TestMethod]
    public void StableDiffusionTextEncoderFolder_WithoutProjection()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("text_encoder");
        var tensors = SafeTensors.LoadAll(Path.Combine(Fixtures.Dir(Fixture), "model.safetensors"));
        tensors.Remove("text_projection.weight", out var p);
        p!.Dispose();
        var config = ClipTempFolder.ReadConfig(Fixture);
        config["architectures"] = new System.Text.Json.Nodes.JsonArray("CLIPTextModel");
        ClipTempFolder.Write(folder, config, tensors);
        using var encoder = ClipTextEncoder.Load(folder);
        Assert.IsFalse(encoder.HasProjection);
        var io = Fixtures.Io(Fixture);
        using var last = encoder.GetLastHiddenState(io["input_ids"]);
        Fixtures.AssertClose(io["last_hidden_state"], last, "last_hidden_state");
        Assert.ThrowsExactly<InvalidOperationException>(() => encoder.GetTextEmbeddings(io["input_ids"]));
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void Fp16Checkpoint_Converts()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("fp16");
        var tensors = SafeTensors.LoadAll(Path.Combine(Fixtures.Dir(Fixture), "model.safetensors"));
        var half = tensors.ToDictionary(kv => kv.Key, kv => kv.Value.is_floating_point() ? kv.Value.to(ScalarType.Float16) : kv.Value.clone());
        foreach (var t in tensors.Values) t.Dispose();
        ClipTempFolder.Write(folder, ClipTempFolder.ReadConfig(Fixture), half);
        using var encoder = ClipTextEncoder.Load(folder);
        Assert.AreEqual(ScalarType.Float32, encoder.DType);
        var io = Fixtures.Io(Fixture);
        using var o = encoder.Forward(io["input_ids"]);
        Fixtures.AssertClose(io["text_embeds"], o.TextEmbeddings!, "text_embeds (fp16 weights)", rel: 1e-2);
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void WrongShape_AndUnknownModelType_AreNamed()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("shape");
        var tensors = SafeTensors.LoadAll(Path.Combine(Fixtures.Dir(Fixture), "model.safetensors"));
        tensors["text_model.embeddings.token_embedding.weight"].Dispose();
        tensors["text_model.embeddings.token_embedding.weight"] = torch.zeros(65, 24);
        ClipTempFolder.Write(folder, ClipTempFolder.ReadConfig(Fixture), tensors);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ClipTextEncoder.Load(folder));
        StringAssert.Contains(e.Message, "text_model.embeddings.token_embedding.weight");
        StringAssert.Contains(e.Message, "expected [64, 24]");
        StringAssert.Contains(e.Message, "found [65, 24]");

        var other = tmp.Sub("t5");
        var config = ClipTempFolder.ReadConfig(Fixture);
        config["model_type"] = "t5";
        ClipTempFolder.WriteConfig(other, config);
        e = Assert.ThrowsExactly<InvalidDataException>(() => ClipTextEncoder.Load(other));
        StringAssert.Contains(e.Message, "'t5'");
        StringAssert.Contains(e.Message, other);
    }

    [TestMethod]
    public void RepeatedInference_DoesNotLeakTensors()
    {
        using var encoder = ClipTextEncoder.Load(Fixtures.Dir(Fixture));
        var io = Fixtures.Io(Fixture);
        var ids = io["input_ids"];
        using (var o = encoder.Forward(ids)) { }
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 5; i++)
        {
            using var o = encoder.Forward(ids);
            using var e = encoder.GetTextEmbeddings(ids);
        }
        Assert.AreEqual(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void SaveAndLoad_RoundTrips()
    {
        using var tmp = new ClipTempFolder();
        var folder = tmp.Sub("saved");
        using (var encoder = ClipTextEncoder.Load(Fixtures.Dir(Fixture)))
            encoder.Save(folder);
        using var reloaded = ClipTextEncoder.Load(folder);
        Assert.AreEqual(63L, reloaded.Config.EosTokenId);
        AssertTextParity(reloaded);
    }
}
