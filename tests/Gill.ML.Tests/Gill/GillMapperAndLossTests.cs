using System.Text.Json.Nodes;
using Gill.ML.Modules;
using Gill.ML.Serialization;
using Gill.ML.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests;

[TestClass]
public class GillMapperAndLossTests
{
    [ClassInitialize]
    public static void Init(TestContext _) => GillTestThreads.Enter();

    [ClassCleanup]
    public static void Cleanup() => GillTestThreads.Leave();

    private static GillConfig MapperConfig(out int inDim)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir("gill-mapper-tiny"), "config.json")))!;
        inDim = (int)json["in_dim"]!;
        int r = (int)json["num_img_tokens"]!;
        return new GillConfig
        {
            MapperHiddenDim = (int)json["hidden_dim"]!,
            GenEmbDim = (int)json["out_dim"]!,
            NumClipTokens = (int)json["num_queries"]!,
            MapperNumHeads = (int)json["num_heads"]!,
            MapperNumEncoderLayers = (int)json["num_layers"]!,
            MapperNumDecoderLayers = (int)json["num_layers"]!,
            NumTokens = r,
            RetrievalTokenIdx = Enumerable.Range(100, r).ToArray(),
            GenTokenIdx = Enumerable.Range(100, r).ToArray(),
        };
    }

    [TestMethod]
    public void GillMapperMatchesPyTorch()
    {
        using var scope = torch.NewDisposeScope();
        var config = MapperConfig(out int inDim);
        using var mapper = GenerationMapper.Create(config, inDim);
        using (var ck = SafeTensorsCheckpoint.Open(Path.Combine(Fixtures.Dir("gill-mapper-tiny"), "model.safetensors")))
            WeightLoader.Load(mapper, ck, k => "gen_text_hidden_fcs.0." + k);
        var io = Fixtures.Io("gill-mapper-tiny");
        var output = mapper.forward(io["img_hidden_states"], io["img_input_embeds"]);
        Fixtures.AssertClose(io["output"], output, "output");
        Fixtures.AssertLoss(io["l2_loss"].item<float>(), GillLosses.GenerationL2(output, io["target"]).item<float>(), "l2_loss");
        Fixtures.AssertLoss(io["mse_loss"].item<float>(), GillLosses.GenerationMse(output, io["target"]).item<float>(), "mse_loss");
    }

    [TestMethod]
    public void GillMapperKeysAreTheOriginalNames()
    {
        var config = GillConfig.Default();
        using var mapper = GenerationMapper.Create(config, 4096);
        var keys = mapper.state_dict().Keys.ToHashSet();
        foreach (var k in new[]
                 {
                     "fc.weight", "query_embs", "model.weight", "model.bias",
                     "tfm.encoder.layers.3.self_attn.in_proj_weight", "tfm.encoder.layers.0.self_attn.out_proj.bias",
                     "tfm.encoder.layers.0.linear1.weight", "tfm.encoder.layers.0.norm2.bias", "tfm.encoder.norm.weight",
                     "tfm.decoder.layers.3.multihead_attn.in_proj_bias", "tfm.decoder.layers.0.norm3.weight", "tfm.decoder.norm.bias",
                 })
            Assert.IsTrue(keys.Contains(k), k);
        // Spec §1.3: the full-size GILLMapper has 31,958,784 parameters.
        Assert.AreEqual(31_958_784L, mapper.parameters().Sum(p => p.numel()));
        using var heads = new GillHeads(config, 4096);
        // Spec §1.3 total: 50,096,385 trainable parameters.
        Assert.AreEqual(50_096_385L, heads.parameters().Sum(p => p.numel()));
    }

    [TestMethod]
    [DataRow(GillMapperKind.Linear)]
    [DataRow(GillMapperKind.Mlp)]
    [DataRow(GillMapperKind.EncoderOnlyTransformer)]
    [DataRow(GillMapperKind.GillMapper)]
    public void EveryMapperKindMapsRStatesToLTokensAndLearns(GillMapperKind kind)
    {
        using var scope = torch.NewDisposeScope();
        torch.random.manual_seed(5);
        var config = MapperConfig(out int inDim);
        config.TextFcMode = kind;
        using var mapper = GenerationMapper.Create(config, inDim);
        Assert.AreEqual(kind, mapper.Kind);
        var h = torch.randn(3, config.NumTokens, inDim);
        var e = torch.randn(3, config.NumTokens, inDim);
        var target = torch.randn(3, config.NumClipTokens, config.GenEmbDim);
        using var opt = torch.optim.Adam(mapper.parameters(), 3e-3);
        double first = 0, last = 0;
        for (int i = 0; i < 40; i++)
        {
            using var s = torch.NewDisposeScope();
            opt.zero_grad();
            var loss = GillLosses.GenerationL2(mapper.forward(h, e), target);
            loss.backward();
            opt.step();
            if (i == 0) first = loss.item<float>();
            last = loss.item<float>();
        }
        Assert.IsTrue(last < 0.9 * first, $"{kind}: loss {first} -> {last}");
    }

    [TestMethod]
    public void InfoNceAndLmCrossEntropyMatchTheLossesFixture()
    {
        using var scope = torch.NewDisposeScope();
        var io = Fixtures.Io("losses");
        var (loss, t2i, i2t) = GillLosses.InfoNce(io["txt_emb"], io["img_emb"], io["logit_scale"]);
        Fixtures.AssertLoss(io["info_nce"].item<float>(), loss.item<float>(), "info_nce");
        Fixtures.AssertLoss(io["t2i"].item<float>(), t2i.item<float>(), "t2i");
        Fixtures.AssertLoss(io["i2t"].item<float>(), i2t.item<float>(), "i2t");
        var (sum, _, _) = GillLosses.InfoNce(io["txt_emb"], io["img_emb"], io["logit_scale"], ContrastiveReduction.Sum);
        Fixtures.AssertLoss(io["t2i"].item<float>() + io["i2t"].item<float>(), sum.item<float>(), "info_nce summed");
        Fixtures.AssertLoss(io["lm_ce"].item<float>(), GillLosses.CausalLMCrossEntropy(io["lm_logits"], io["lm_labels"]).item<float>(), "lm_ce");
    }

    [TestMethod]
    public void LabelsFollowTheOriginalMasking()
    {
        int[] img = { 96, 97, 98 };
        var (ids, len) = GillSequences.Build(new[] { 10, 11 }, 8, 2, 1, img);
        CollectionAssert.AreEqual(new long[] { 2, 10, 11, 96, 97, 98, 1, 1 }, ids);
        Assert.AreEqual(6, len);
        var (cut, cutLen) = GillSequences.Build(new[] { 10, 11, 12, 13, 14, 15 }, 6, 2, 1, img);
        CollectionAssert.AreEqual(new long[] { 2, 10, 11, 96, 97, 98 }, cut);
        Assert.AreEqual(6, cutLen);

        var tokens = new long[,] { { 2, 10, 11, 96, 97, 98, 1, 1 } };
        var (cap, capPad) = GillSequences.CaptioningLabels(tokens, 2, 1, img);
        CollectionAssert.AreEqual(new long[] { -100, -100, 2, 10, 11, -100, -100, -100, -100, -100 }, cap.Cast<long>().ToArray());
        Assert.AreEqual(5, capPad[0]);
        var (text, pad) = GillSequences.TextLabels(tokens, 1);
        Assert.AreEqual(6, pad[0]);
        GillSequences.MaskNonFirstImgTokens(text, 1, img);
        CollectionAssert.AreEqual(new long[] { 2, 10, 11, 96, -100, -100, -100, -100 }, text.Cast<long>().ToArray());
    }

    [TestMethod]
    public void PadEqualToBosDoesNotMaskTheLeadingBos()
    {
        // GPT-2 style: <|endoftext|> (here 7) is BOS and pad.
        int[] img = { 96, 97 };
        var tokens = new long[,] { { 7, 10, 11, 96, 97, 7, 7 } };
        var (cap, capPad) = GillSequences.CaptioningLabels(tokens, 1, 7, img);
        CollectionAssert.AreEqual(new long[] { -100, 7, 10, 11, -100, -100, -100, -100 }, cap.Cast<long>().ToArray());
        Assert.AreEqual(4, capPad[0]);
        var (text, pad) = GillSequences.TextLabels(tokens, 7);
        Assert.AreEqual(5, pad[0]);
        GillSequences.MaskNonFirstImgTokens(text, 7, img);
        CollectionAssert.AreEqual(new long[] { 7, 10, 11, 96, -100, -100, -100 }, text.Cast<long>().ToArray());
    }

    [TestMethod]
    public void LossOnLabelledPositionsEqualsTheFullLoss()
    {
        using var scope = torch.NewDisposeScope();
        var gen = new Generator(5);
        var w = torch.randn(new long[] { 50, 8 }, generator: gen);
        var labels = torch.tensor(new long[] { 3, 4, 9, -100, -100, -100, 1, 2, 5, 6, 7, -100 }, new long[] { 2, 6 });
        Tensor[] grads = new Tensor[2];
        float[] values = new float[2];
        for (int pass = 0; pass < 2; pass++)
        {
            var h = torch.randn(new long[] { 2, 6, 8 }, generator: new Generator(9)).requires_grad_(true);
            Func<Tensor, Tensor> logitsOf = x => torch.matmul(x, w.t());
            var loss = pass == 0
                ? GillLosses.CausalLMCrossEntropy(logitsOf(h), labels)
                : GillLosses.CausalLMCrossEntropy(logitsOf, h, labels);
            loss.backward();
            values[pass] = loss.item<float>();
            grads[pass] = h.grad!.clone();
        }
        Assert.AreEqual(values[0], values[1], 1e-6f);
        Assert.IsTrue(grads[0].allclose(grads[1], rtol: 1e-5, atol: 1e-7), "gradients differ");
        Assert.IsTrue(grads[0].abs().sum().item<float>() > 0, "no gradient reached the hidden states");
        Assert.ThrowsExactly<ArgumentException>(() => GillLosses.CausalLMCrossEntropy(x => x, torch.zeros(2, 6), labels));
    }

    [TestMethod]
    public void ConcatenationPairsRowsAndDropsTheSecondBos()
    {
        // Rows of length 5: [BOS a IMG pad pad] and [BOS b c IMG pad]; pad indexes 3 and 4.
        var index = GillSequences.ConcatenationGatherIndex(new[] { 3, 4 }, 5, 0);
        CollectionAssert.AreEqual(new long[] { 0, 1, 2, 6, 7, 8, 3, 4, 9 }, index);
        Assert.ThrowsExactly<ArgumentException>(() => GillSequences.ConcatenationGatherIndex(new[] { 3 }, 5, 0));
    }

    [TestMethod]
    public void ConfigReadsTheOriginalModelArgs()
    {
        const string json = """
        {"opt_version": "facebook/opt-6.7b", "freeze_lm": true, "n_visual_tokens": 4, "ret_emb_dim": 256, "gen_emb_dim": 768,
         "text_emb_layers": [-1], "text_fc_mode": "gill_mapper", "ret_text_fc_mode": "linear", "num_gen_tokens": 8,
         "num_ret_tokens": 8, "num_clip_tokens": 77, "share_ret_gen": true,
         "retrieval_token_idx": [50266, 50267, 50268, 50269, 50270, 50271, 50272, 50273],
         "gen_token_idx": [50266, 50267, 50268, 50269, 50270, 50271, 50272, 50273]}
        """;
        var c = GillConfig.FromJson(json);
        Assert.AreEqual(8, c.NumTokens);
        Assert.AreEqual(GillMapperKind.GillMapper, c.TextFcMode);
        Assert.AreEqual(50273, c.ImgTokenIds[^1]);
        var again = GillConfig.FromJson(c.ToJson());
        Assert.AreEqual(c.ToJson(), again.ToJson());
        StringAssert.Contains(c.ToJson(), "\"text_fc_mode\": \"gill_mapper\"");
        var bad = json.Replace("\"num_ret_tokens\": 8", "\"num_ret_tokens\": 4");
        var ex = Assert.ThrowsExactly<ArgumentException>(() => GillConfig.FromJson(bad));
        StringAssert.Contains(ex.Message, "num_ret_tokens");
        var fromage = GillConfig.Fromage();
        fromage.Validate();
        Assert.AreEqual(1, fromage.NVisualTokens);
    }
}
