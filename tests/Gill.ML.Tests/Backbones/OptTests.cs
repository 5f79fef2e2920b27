using Gill.ML.Modules;
using Gill.ML.Modules.Opt;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

[TestClass]
public class OptTests
{
    private const string Fixture = "opt-tiny";

    /// <summary>Compares only the positions where the mask is 1 (what padded queries attend to is library-specific).</summary>
    internal static void AssertCloseMasked(Tensor expected, Tensor actual, Tensor mask, string what)
    {
        CollectionAssert.AreEqual(expected.shape, actual.shape, $"{what}: shape");
        for (long b = 0; b < mask.shape[0]; b++)
        {
            var keep = mask[b].nonzero().squeeze(1);
            Fixtures.AssertClose(expected[b].index_select(0, keep), actual[b].index_select(0, keep), $"{what}[row {b}]");
        }
    }

    [TestMethod]
    public void ForwardMatchesPyTorch()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var mask = io["attention_mask"];
        Assert.AreEqual(2L, mask.shape[1] - mask[1].sum().item<long>(), "fixture row 1 is left-padded by 2");
        using var noGrad = no_grad();
        var output = lm.Forward(new CausalLMInput { InputIds = io["input_ids"], AttentionMask = mask, OutputHiddenStates = true });
        AssertCloseMasked(io["last_hidden_state"], output.LastHiddenState, mask, "last_hidden_state");
        AssertCloseMasked(io["logits"], output.Logits!, mask, "logits");
        Assert.AreEqual(lm.Info.NumLayers + 1, output.HiddenStates!.Count);
        for (int i = 0; i < output.HiddenStates.Count; i++)
            AssertCloseMasked(io[$"hidden_states.{i}"], output.HiddenStates[i], mask, $"hidden_states.{i}");
        Assert.AreEqual("opt", lm.Info.ModelType);
        Assert.AreEqual(ScalarType.Float32, lm.DType);
    }

    [TestMethod]
    public void ForwardFromInputsEmbedsEqualsForwardFromIds()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        using var noGrad = no_grad();
        var fromIds = lm.Forward(new CausalLMInput { InputIds = io["input_ids"], AttentionMask = io["attention_mask"] });
        var fromEmb = lm.Forward(new CausalLMInput { InputsEmbeds = lm.EmbedTokens(io["input_ids"]), AttentionMask = io["attention_mask"] });
        Fixtures.AssertClose(fromIds.Logits!, fromEmb.Logits!, "logits from inputs_embeds", 1e-6);
    }

    [TestMethod]
    public void KvCachedLogitsEqualFullRecomputation()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var ids = io["input_ids"];
        var mask = io["attention_mask"];
        using var noGrad = no_grad();
        var full = lm.Forward(new CausalLMInput { InputIds = ids, AttentionMask = mask }).Logits!;
        using var cache = new KVCache(lm.Info.NumLayers);
        // prefix of 4 positions, then one position at a time
        var first = lm.Forward(new CausalLMInput { InputIds = ids.narrow(1, 0, 4), AttentionMask = mask.narrow(1, 0, 4), Cache = cache });
        var pieces = new List<Tensor> { first.Logits! };
        for (long t = 4; t < ids.shape[1]; t++)
        {
            var step = lm.Forward(new CausalLMInput { InputIds = ids.narrow(1, t, 1), AttentionMask = mask.narrow(1, 0, t + 1), Cache = cache });
            pieces.Add(step.Logits!);
        }
        Assert.AreEqual(ids.shape[1], cache.Length);
        AssertCloseMasked(full, cat(pieces, 1), mask, "cached logits");
    }

    [TestMethod]
    public void FrozenByDefaultButDifferentiableWithRespectToInputsEmbeds()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        Assert.IsTrue(lm.parameters().All(p => !p.requires_grad), "parameters must be frozen by default");
        Assert.IsFalse(lm.training, "evaluation mode by default");
        var embeds = lm.EmbedTokens(io["input_ids"]).detach().requires_grad_(true);
        var output = lm.Forward(new CausalLMInput { InputsEmbeds = embeds, AttentionMask = io["attention_mask"], OutputHiddenStates = true });
        output.Logits!.pow(2).mean().backward();
        Assert.IsNotNull(embeds.grad);
        Assert.IsTrue(embeds.grad!.abs().sum().item<float>() > 0, "gradient w.r.t. inputs_embeds is zero");
        Assert.IsTrue(lm.parameters().All(p => p.grad is null), "frozen parameters must not receive gradients");
    }

    [TestMethod]
    public void ForwardOutputsBelongToTheCallersScope()
    {
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        using var noGrad = no_grad();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++)
        {
            using var scope = NewDisposeScope();
            using var cache = new KVCache(lm.Info.NumLayers);
            var output = lm.Forward(new CausalLMInput { InputIds = io["input_ids"], AttentionMask = io["attention_mask"], OutputHiddenStates = true, Cache = cache });
            Assert.AreEqual(3, output.HiddenStates!.Count);
        }
        Assert.AreEqual(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount, "forward leaked tensors out of the caller's scope");
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void GradientsFlowThroughTheNewPositionsOfACachedStep()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var ids = io["input_ids"].narrow(0, 0, 1);
        using var cache = new KVCache(lm.Info.NumLayers);
        using (no_grad()) lm.Forward(new CausalLMInput { InputIds = ids.narrow(1, 0, 5), Cache = cache });
        var embeds = lm.EmbedTokens(ids.narrow(1, 5, 2)).detach().requires_grad_(true);
        var cached = lm.Forward(new CausalLMInput { InputsEmbeds = embeds, Cache = cache }).Logits!;
        cached.select(1, 1).sum().backward();
        var gradCached = embeds.grad!.clone();
        var embeds2 = lm.EmbedTokens(ids.narrow(1, 5, 2)).detach().requires_grad_(true);
        var full = lm.Forward(new CausalLMInput { InputsEmbeds = cat(new[] { lm.EmbedTokens(ids.narrow(1, 0, 5)), embeds2 }, 1) }).Logits!;
        full.select(1, 6).sum().backward();
        Fixtures.AssertClose(embeds2.grad!, gradCached, "gradient with a KV cache");
        Assert.IsTrue(gradCached.select(1, 0).abs().sum().item<float>() > 0, "position 5 influences position 6 through its cached key/value");
    }

    [TestMethod]
    public void SetTrainableEnablesGradientsAndDropout()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        Assert.AreEqual(0.1, ((OptConfig)lm.Config).Dropout, 1e-12, "HF default dropout when config.json omits it");
        lm.SetTrainable(true);
        Assert.IsTrue(lm.training);
        Assert.IsTrue(lm.parameters().All(p => p.requires_grad));
        var input = new CausalLMInput { InputIds = io["input_ids"], AttentionMask = io["attention_mask"] };
        var a = lm.Forward(input).Logits!;
        var b = lm.Forward(input).Logits!;
        Assert.IsTrue((a - b).abs().max().item<float>() > 1e-4, "dropout must be active in training mode");
        a.pow(2).mean().backward();
        Assert.IsTrue(lm.parameters().All(p => p.grad is not null), "every parameter receives a gradient when trainable");
        lm.SetTrainable(false);
        Assert.IsFalse(lm.training);
        using var noGrad = no_grad();
        var c = lm.Forward(input).Logits!;
        var d = lm.Forward(input).Logits!;
        Assert.AreEqual(0f, (c - d).abs().max().item<float>(), "evaluation mode is deterministic");
    }

    [TestMethod]
    [DataRow(ScalarType.Float16)]
    [DataRow(ScalarType.BFloat16)]
    public void HalfPrecisionCheckpointLoadsIntoFloat32WithoutPrefix(ScalarType storedType)
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        var dir = CopyCheckpoint(kv => kv.Key.Replace("model.decoder.", "decoder."), t => t.to(storedType));
        try
        {
            using var lm = CausalLM.Load(dir);
            Assert.AreEqual(ScalarType.Float32, lm.DType);
            using var noGrad = no_grad();
            var output = lm.Forward(new CausalLMInput { InputIds = io["input_ids"], AttentionMask = io["attention_mask"] });
            // rounding of the weights to 11 (fp16) or 8 (bf16) mantissa bits
            double rel = storedType == ScalarType.Float16 ? 5e-3 : 5e-2;
            AssertCloseMasked(io["logits"], output.Logits!, io["attention_mask"], $"logits from {storedType} checkpoint", rel);
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void StoredTiedLmHeadIsAccepted()
    {
        using var scope = NewDisposeScope();
        var dir = CopyCheckpoint(kv => kv.Key, t => t, extra: ck => new("lm_head.weight", ck["model.decoder.embed_tokens.weight"]));
        try
        {
            using var lm = CausalLM.Load(dir);
            Assert.AreEqual(96, lm.Info.VocabSize);
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void MissingKeyIsReportedByName()
    {
        var dir = CopyCheckpoint(kv => kv.Key, t => t, skip: k => k == "model.decoder.layers.1.fc2.bias");
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => CausalLM.Load(dir));
            StringAssert.Contains(e.Message, "model.decoder.layers.1.fc2.bias");
            StringAssert.Contains(e.Message, "[32]");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void WrongShapeIsReportedWithExpectedAndFoundShapes()
    {
        var dir = CopyCheckpoint(kv => kv.Key,
            t => t, transformNamed: (k, t) => k == "decoder.layers.0.fc1.weight" ? t.narrow(0, 0, 60) : t,
            rename: k => k.Replace("model.decoder.", "decoder."));
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => CausalLM.Load(dir));
            StringAssert.Contains(e.Message, "decoder.layers.0.fc1.weight");
            StringAssert.Contains(e.Message, "expected [64, 32]");
            StringAssert.Contains(e.Message, "found [60, 32]");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void UnknownModelTypeAndMissingFilesGiveClearErrors()
    {
        var missing = Path.Combine(Path.GetTempPath(), "gill-no-such-model-" + Guid.NewGuid().ToString("N"));
        var e1 = Assert.Throws<DirectoryNotFoundException>(() => CausalLM.Load(missing));
        StringAssert.Contains(e1.Message, missing);

        var dir = Directory.CreateTempSubdirectory("gill-lm-").FullName;
        try
        {
            var e2 = Assert.Throws<FileNotFoundException>(() => CausalLM.Load(dir));
            StringAssert.Contains(e2.Message, "config.json");
            StringAssert.Contains(e2.Message, dir);

            File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(Fixtures.Dir(Fixture), "config.json")));
            var e3 = Assert.Throws<FileNotFoundException>(() => CausalLM.Load(dir));
            StringAssert.Contains(e3.Message, "model.safetensors");
            StringAssert.Contains(e3.Message, dir);

            File.WriteAllText(Path.Combine(dir, "config.json"), "{\"model_type\": \"llama\", \"hidden_size\": 8}");
            var e4 = Assert.Throws<InvalidDataException>(() => CausalLM.Load(dir));
            StringAssert.Contains(e4.Message, "llama");
            StringAssert.Contains(e4.Message, Path.Combine(dir, "config.json"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void OutOfRangeIdsAndBadMaskAreRejected()
    {
        using var scope = NewDisposeScope();
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        using var noGrad = no_grad();
        var e = Assert.Throws<ArgumentException>(() => lm.Forward(new CausalLMInput { InputIds = tensor(new long[,] { { 2, 96 } }) }));
        StringAssert.Contains(e.Message, "[0, 96)");
        var e2 = Assert.Throws<ArgumentException>(() => lm.Forward(new CausalLMInput { InputIds = tensor(new long[,] { { 2, 5 } }), AttentionMask = ones(1, 3, ScalarType.Int64) }));
        StringAssert.Contains(e2.Message, "AttentionMask");
    }

    [TestMethod]
    public void SaveThenLoadRoundTrips()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var dir = Directory.CreateTempSubdirectory("gill-lm-save-").FullName;
        try
        {
            CausalLM.Save(lm, dir);
            using var again = CausalLM.Load(dir);
            Assert.AreEqual(lm.Config, again.Config);
            using var noGrad = no_grad();
            var input = new CausalLMInput { InputIds = io["input_ids"], AttentionMask = io["attention_mask"] };
            Assert.AreEqual(0f, (lm.Forward(input).Logits! - again.Forward(input).Logits!).abs().max().item<float>());
            Assert.IsFalse(Directory.GetFiles(dir).Any(f => f.EndsWith(".tmp", StringComparison.Ordinal)), "no temporary files left");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void Opt350mVariantUsesPostLnAndProjections()
    {
        using var scope = NewDisposeScope();
        var config = new OptConfig
        {
            VocabSize = 50, HiddenSize = 32, WordEmbedProjDim = 16, FfnDim = 48, NumHiddenLayers = 2, NumAttentionHeads = 4,
            MaxPositionEmbeddings = 24, DoLayerNormBefore = false, Dropout = 0,
        };
        using var lm = CausalLM.Create(config, seed: 7);
        var keys = lm.state_dict().Keys.ToHashSet();
        Assert.IsTrue(keys.Contains("model.decoder.project_in.weight") && keys.Contains("model.decoder.project_out.weight"));
        Assert.IsFalse(keys.Any(k => k.StartsWith("model.decoder.final_layer_norm.", StringComparison.Ordinal)), "post-LN OPT has no final layer norm");
        Assert.AreEqual(16, lm.Info.InputEmbeddingSize);
        var ids = tensor(new long[,] { { 1, 1, 5, 9, 3, 7 }, { 4, 8, 15, 16, 23, 42 } });
        var mask = tensor(new long[,] { { 0, 0, 1, 1, 1, 1 }, { 1, 1, 1, 1, 1, 1 } });
        using var noGrad = no_grad();
        var full = lm.Forward(new CausalLMInput { InputIds = ids, AttentionMask = mask, OutputHiddenStates = true });
        Assert.AreEqual(16L, full.LastHiddenState.shape[2]);
        Assert.AreEqual(32L, full.HiddenStates![0].shape[2], "hidden_states.0 is after project_in");
        Assert.AreEqual(0f, (full.HiddenStates[^1] - full.LastHiddenState).abs().max().item<float>());
        // post-LN: the layer output is layer-normed (unit variance per position before affine = ones/zeros at init)
        var layerOut = full.HiddenStates[1];
        Fixtures.AssertClose(zeros(2, 6), layerOut.mean(new long[] { -1 }), "post-LN mean");
        using var cache = new KVCache(lm.Info.NumLayers);
        var a = lm.Forward(new CausalLMInput { InputIds = ids.narrow(1, 0, 5), AttentionMask = mask.narrow(1, 0, 5), Cache = cache });
        var b = lm.Forward(new CausalLMInput { InputIds = ids.narrow(1, 5, 1), AttentionMask = mask, Cache = cache });
        AssertCloseMasked(full.Logits!, cat(new[] { a.Logits!, b.Logits! }, 1), mask, "opt-350m cached logits");
        // the left-padded row equals the same tokens without padding
        var alone = lm.Forward(new CausalLMInput { InputIds = ids[0].narrow(0, 2, 4).unsqueeze(0) }).Logits!;
        Fixtures.AssertClose(alone[0], full.Logits![0].narrow(0, 2, 4), "left padding does not change the result");
        var dir = Directory.CreateTempSubdirectory("gill-opt350-").FullName;
        try
        {
            CausalLM.Save(lm, dir);
            using var again = CausalLM.Load(dir);
            Assert.AreEqual(config with { }, (OptConfig)again.Config);
            Fixtures.AssertClose(full.Logits!, again.Forward(new CausalLMInput { InputIds = ids, AttentionMask = mask }).Logits!, "reloaded");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void NoBiasAndNonAffineNormVariantRoundTrips()
    {
        using var scope = NewDisposeScope();
        var config = new OptConfig
        {
            VocabSize = 40, HiddenSize = 16, WordEmbedProjDim = 16, FfnDim = 32, NumHiddenLayers = 1, NumAttentionHeads = 2,
            MaxPositionEmbeddings = 16, EnableBias = false, LayerNormElementwiseAffine = false, ActivationFunction = "gelu",
        };
        using var lm = CausalLM.Create(config, seed: 3);
        var keys = lm.state_dict().Keys.ToList();
        Assert.IsFalse(keys.Any(k => k.EndsWith(".bias", StringComparison.Ordinal)), string.Join(", ", keys));
        Assert.IsFalse(keys.Any(k => k.Contains("layer_norm", StringComparison.Ordinal)), string.Join(", ", keys));
        var dir = Directory.CreateTempSubdirectory("gill-opt-nobias-").FullName;
        try
        {
            CausalLM.Save(lm, dir);
            using var again = CausalLM.Load(dir);
            Assert.AreEqual(config, (OptConfig)again.Config);
            var ids = tensor(new long[,] { { 2, 7, 9, 11 } });
            using var noGrad = no_grad();
            Fixtures.AssertClose(lm.Forward(new CausalLMInput { InputIds = ids }).Logits!, again.Forward(new CausalLMInput { InputIds = ids }).Logits!, "reloaded");
        }
        finally { Directory.Delete(dir, true); }
    }

    internal static void AssertCloseMasked(Tensor expected, Tensor actual, Tensor mask, string what, double rel)
    {
        for (long b = 0; b < mask.shape[0]; b++)
        {
            var keep = mask[b].nonzero().squeeze(1);
            Fixtures.AssertClose(expected[b].index_select(0, keep), actual[b].index_select(0, keep), $"{what}[row {b}]", rel);
        }
    }

    /// <summary>Copies the fixture checkpoint into a temporary folder with renamed / converted / dropped tensors.</summary>
    private static string CopyCheckpoint(
        Func<KeyValuePair<string, Tensor>, string> renameKv, Func<Tensor, Tensor> convert,
        Func<string, bool>? skip = null, Func<Dictionary<string, Tensor>, KeyValuePair<string, Tensor>>? extra = null,
        Func<string, Tensor, Tensor>? transformNamed = null, Func<string, string>? rename = null)
    {
        using var scope = NewDisposeScope();
        var src = Fixtures.Dir(Fixture);
        var tensors = SafeTensors.LoadAll(Path.Combine(src, "model.safetensors"));
        var dir = Directory.CreateTempSubdirectory("gill-opt-").FullName;
        File.Copy(Path.Combine(src, "config.json"), Path.Combine(dir, "config.json"));
        var list = tensors.Where(kv => skip is null || !skip(kv.Key))
            .Select(kv =>
            {
                var key = rename is null ? renameKv(kv) : rename(kv.Key);
                var t = convert(kv.Value);
                if (transformNamed is not null) t = transformNamed(key, t);
                return new KeyValuePair<string, Tensor>(key, t);
            }).ToList();
        if (extra is not null) list.Add(extra(tensors));
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), list);
        return dir;
    }
}
