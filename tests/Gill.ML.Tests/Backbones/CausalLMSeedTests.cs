using Gill.ML.Modules;
using Gill.ML.Modules.Gpt2;
using Gill.ML.Modules.Opt;
using TorchSharp;

namespace Gill.ML.Tests.Backbones;

/// <summary>CausalLM.Create(seed) gives the same weights every time, whatever the global generator's state.</summary>
[TestClass]
public sealed class CausalLMSeedTests
{
    private static void AssertSameWeights(CausalLMConfig config)
    {
        torch.manual_seed(1);
        using var a = CausalLM.Create(config, seed: 11);
        torch.manual_seed(2);
        using var b = CausalLM.Create(config, seed: 11);
        using var c = CausalLM.Create(config, seed: 12);
        var sa = a.state_dict();
        var sb = b.state_dict();
        foreach (var (k, v) in sa) Assert.IsTrue(v.EqualTo(sb[k]), $"{config.ModelType}: {k} differs for the same seed");
        Assert.IsTrue(sa.Any(kv => !kv.Value.EqualTo(c.state_dict()[kv.Key])), $"{config.ModelType}: another seed gave the same weights");
    }

    [TestMethod]
    public void OptWeightsDependOnlyOnTheSeed() => AssertSameWeights(new OptConfig
    {
        VocabSize = 40, HiddenSize = 16, WordEmbedProjDim = 16, FfnDim = 32, NumHiddenLayers = 2, NumAttentionHeads = 2, MaxPositionEmbeddings = 12,
    });

    [TestMethod]
    public void Gpt2WeightsDependOnlyOnTheSeed() => AssertSameWeights(new Gpt2Config
    {
        VocabSize = 40, NEmbd = 16, NLayer = 2, NHead = 2, NPositions = 12,
    });
}
