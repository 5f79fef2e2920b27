using Gill.ML.Decoding;
using Gill.ML.Modules;
using Gill.ML.Modules.Gpt2;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

[TestClass]
public class Gpt2Tests
{
    private const string Fixture = "gpt2-tiny";

    [TestMethod]
    public void ForwardMatchesPyTorch()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        Assert.AreEqual("gpt2", lm.Info.ModelType);
        using var noGrad = no_grad();
        var output = lm.Forward(new CausalLMInput { InputIds = io["input_ids"], OutputHiddenStates = true });
        Fixtures.AssertClose(io["last_hidden_state"], output.LastHiddenState, "last_hidden_state");
        Fixtures.AssertClose(io["logits"], output.Logits!, "logits");
        Assert.AreEqual(lm.Info.NumLayers + 1, output.HiddenStates!.Count);
        for (int i = 0; i < output.HiddenStates.Count; i++)
            Fixtures.AssertClose(io[$"hidden_states.{i}"], output.HiddenStates[i], $"hidden_states.{i}");
    }

    [TestMethod]
    public void KvCacheAndLeftPaddingGiveTheSameLogits()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var ids = io["input_ids"];
        using var noGrad = no_grad();
        var full = lm.Forward(new CausalLMInput { InputIds = ids }).Logits!;
        using var cache = new KVCache(lm.Info.NumLayers);
        var pieces = new List<Tensor> { lm.Forward(new CausalLMInput { InputIds = ids.narrow(1, 0, 5), Cache = cache }).Logits! };
        for (long t = 5; t < ids.shape[1]; t++)
            pieces.Add(lm.Forward(new CausalLMInput { InputIds = ids.narrow(1, t, 1), Cache = cache }).Logits!);
        Fixtures.AssertClose(full, cat(pieces, 1), "cached logits");

        // row 0 left-padded by 3 (positions from cumsum(mask) - 1) equals the unpadded row
        var padded = cat(new[] { zeros(new long[] { 1, 3 }, ScalarType.Int64), ids.narrow(0, 0, 1) }, 1);
        var mask = cat(new[] { zeros(new long[] { 1, 3 }, ScalarType.Int64), ones(new long[] { 1, ids.shape[1] }, ScalarType.Int64) }, 1);
        var p = lm.Forward(new CausalLMInput { InputIds = padded, AttentionMask = mask }).Logits!;
        Fixtures.AssertClose(io["logits"][0], p[0].narrow(0, 3, ids.shape[1]), "left-padded row");
        var gen = CausalLMGenerator.Generate(lm, padded, mask, new GenerationOptions { MaxNewTokens = 4, StopTokenIds = Array.Empty<long>() });
        var alone = CausalLMGenerator.Generate(lm, ids.narrow(0, 0, 1), null, new GenerationOptions { MaxNewTokens = 4, StopTokenIds = Array.Empty<long>() });
        CollectionAssert.AreEqual(alone.data<long>().ToArray(), gen.narrow(1, 3, alone.shape[1]).data<long>().ToArray());
    }

    [TestMethod]
    public void HubLayoutIsReadAndSavedFolderWithPrefixReloads()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using (var ck = SafeTensorsCheckpoint.Open(Fixtures.Dir(Fixture)))
        {
            Assert.IsTrue(ck.Contains("h.0.attn.bias"), "fixture stores the causal-mask buffers");
            Assert.IsFalse(ck.Tensors.Keys.Any(k => k.StartsWith("transformer.", StringComparison.Ordinal)));
        }
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        Assert.IsTrue(lm.state_dict().Keys.All(k => k.StartsWith("transformer.", StringComparison.Ordinal)));
        var dir = Directory.CreateTempSubdirectory("gill-gpt2-").FullName;
        try
        {
            CausalLM.Save(lm, dir);
            using (var ck = SafeTensorsCheckpoint.Open(dir))
                Assert.IsTrue(ck.Contains("transformer.wte.weight"));
            using var again = CausalLM.Load(dir, new CausalLMLoadOptions { DType = ScalarType.Float64 });
            Assert.AreEqual(ScalarType.Float64, again.DType);
            using var noGrad = no_grad();
            Fixtures.AssertClose(io["logits"], again.Forward(new CausalLMInput { InputIds = io["input_ids"] }).Logits!, "reloaded in float64");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void HalfPrecisionCheckpointLoadsIntoFloat32()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        var src = Fixtures.Dir(Fixture);
        var dir = Directory.CreateTempSubdirectory("gill-gpt2-fp16-").FullName;
        try
        {
            File.Copy(Path.Combine(src, "config.json"), Path.Combine(dir, "config.json"));
            var tensors = SafeTensors.LoadAll(Path.Combine(src, "model.safetensors"));
            SafeTensors.Save(Path.Combine(dir, "model.safetensors"), tensors.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.to(ScalarType.Float16))));
            using var lm = CausalLM.Load(dir);
            Assert.AreEqual(ScalarType.Float32, lm.DType);
            using var noGrad = no_grad();
            Fixtures.AssertClose(io["logits"], lm.Forward(new CausalLMInput { InputIds = io["input_ids"] }).Logits!, "logits from fp16 weights", 5e-3);
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void ConfigDefaultsAndGradientsThroughEmbeddings()
    {
        using var scope = NewDisposeScope();
        var config = (Gpt2Config)CausalLM.ReadConfig(Fixtures.Dir(Fixture));
        Assert.AreEqual(128, config.NInner ?? 4 * config.NEmbd);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var embeds = lm.EmbedTokens(Fixtures.Io(Fixture)["input_ids"]).detach().requires_grad_(true);
        lm.Forward(new CausalLMInput { InputsEmbeds = embeds }).Logits!.sum().backward();
        Assert.IsTrue(embeds.grad!.abs().sum().item<float>() > 0);
        Assert.IsTrue(lm.parameters().All(p => p.grad is null));
    }
}
