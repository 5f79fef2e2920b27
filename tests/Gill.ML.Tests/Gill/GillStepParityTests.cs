using Gill.ML.Modules;
using Gill.ML.Serialization;
using Gill.ML.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests;

[TestClass]
public class GillStepParityTests
{
    [ClassInitialize]
    public static void Init(TestContext _) => GillTestThreads.Enter();

    [ClassCleanup]
    public static void Cleanup() => GillTestThreads.Leave();

    private static GillTrainingOptions NoConcat() => new() { ConcatenationProbability = 0 };

    [TestMethod]
    public void OneTrainingStepMatchesPyTorch()
    {
        using var scope = torch.NewDisposeScope();
        var io = Fixtures.Io(GillTestData.StepFixture);
        using var model = GillTestData.LoadStepModel();
        using var step = new GillTrainingStep(model, NoConcat());
        var r = step.Forward(GillTestData.StepBatch(io));

        Fixtures.AssertLoss(io["ce_cap"].item<float>(), r.Captioning.item<float>(), "ce_cap");
        Fixtures.AssertLoss(io["ce_text"].item<float>(), r.RetrievalText.item<float>(), "ce_text (retrieval pass)");
        Fixtures.AssertLoss(io["ce_text"].item<float>(), r.GenerationText.item<float>(), "ce_text (generation pass)");
        Fixtures.AssertLoss(io["info_nce"].item<float>(), r.Contrastive.item<float>(), "info_nce");
        Fixtures.AssertLoss(io["gen_l2"].item<float>(), r.Generation.item<float>(), "gen_l2");
        Fixtures.AssertLoss(io["total"].item<float>(), r.Total.item<float>(), "total");
        Fixtures.AssertClose(io["img_hidden_states"], r.ImgHiddenStates, "img_hidden_states");
        Fixtures.AssertClose(io["ret_text_embedding"], r.RetrievalTextEmbedding, "ret_text_embedding");
        Fixtures.AssertClose(io["gen_output"], r.GenerationOutput, "gen_output");

        r.Total.backward();
        var grads = model.Heads.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad);
        int compared = 0;
        foreach (var (key, expected) in io.Where(kv => kv.Key.StartsWith("grad.", StringComparison.Ordinal)))
        {
            var name = key["grad.".Length..];
            Assert.IsTrue(grads.TryGetValue(name, out var g) && g is not null, $"no gradient for {name}");
            Fixtures.AssertClose(expected, g!.reshape(expected.shape), key);
            compared++;
        }
        Assert.AreEqual(7, compared);
    }

    [TestMethod]
    public void PerPartInferenceMatchesTheTrainingPasses()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var io = Fixtures.Io(GillTestData.StepFixture);
        using var model = GillTestData.LoadStepModel();
        var h = model.ImgHiddenStates(io["tokens"], io["caption_len"]);
        Fixtures.AssertClose(io["img_hidden_states"], h, "ImgHiddenStates");
        Fixtures.AssertClose(io["ret_text_embedding"], model.TextRetrievalEmbedding(h), "TextRetrievalEmbedding");
        Fixtures.AssertClose(io["gen_output"], model.GenerationEmbedding(h), "GenerationEmbedding");
        var v = model.ImageRetrievalEmbedding(io["visual_features"]);
        Assert.AreEqual(1.0, v.norm(-1).mean().item<float>(), 1e-5);
        CollectionAssert.AreEqual(new long[] { 4, 2, 32 }, model.VisualTokens(io["visual_features"]).shape);
    }

    [TestMethod]
    public void BFloat16BackboneGivesCloseLosses()
    {
        using var scope = torch.NewDisposeScope();
        var io = Fixtures.Io(GillTestData.StepFixture);
        using var model = GillTestData.LoadStepModel(ScalarType.BFloat16);
        using var step = new GillTrainingStep(model, NoConcat());
        var r = step.Forward(GillTestData.StepBatch(io));
        Assert.AreEqual(ScalarType.Float32, r.Total.dtype);
        Assert.AreEqual(io["total"].item<float>(), r.Total.item<float>(), 0.05 * io["total"].item<float>());
        r.Total.backward();
        foreach (var (name, p) in model.Heads.named_parameters())
            Assert.AreEqual(ScalarType.Float32, p.dtype, name);
    }

    [TestMethod]
    public void ImgIdsInsideTheFrozenTableOverrideThoseRows()
    {
        // The original puts [IMG] ids partly inside OPT's padded table; logits and embeddings must use E_img there.
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var lm = CausalLM.Load(Fixtures.Dir("opt-tiny"));
        var config = GillTestData.StepConfig();
        config.RetrievalTokenIdx = config.GenTokenIdx = new[] { 94, 95, 96, 97 };
        using var model = new GillCoreModel(lm, config, ownsLanguageModel: true, seed: 3);
        Assert.AreEqual(98, model.VocabSize);
        var ids = torch.tensor(new long[] { 2, 94, 97, 5 }, new long[] { 1, 4 });
        var emb = model.EmbedTokens(ids);
        Fixtures.AssertClose(model.Heads.ImgTokenEmbeddings[0], emb[0, 1], "row of [IMG0] = 94", 0);
        Fixtures.AssertClose(model.Heads.ImgTokenEmbeddings[3], emb[0, 2], "row of [IMG3] = 97", 0);
        var h = torch.randn(1, 2, 32);
        var logits = model.Logits(h);
        Fixtures.AssertClose(torch.matmul(h, model.Heads.ImgTokenEmbeddings.t()), logits.index_select(2, torch.tensor(new long[] { 94, 95, 96, 97 })), "img logits");
        Fixtures.AssertClose(torch.matmul(h, lm.InputEmbeddingWeight.t()).narrow(2, 0, 94), logits.narrow(2, 0, 94), "frozen logits");
        Assert.ThrowsExactly<ArgumentException>(() => { model.EmbedTokens(torch.tensor(new long[] { 2, 98 }, new long[] { 1, 2 })); });
    }
}
