using Gill.ML.Decoding;
using Gill.ML.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

/// <summary>The README usage example, run against the tiny OPT fixture.</summary>
[TestClass]
public class CausalLMReadmeExampleTests
{
    [TestMethod]
    public void LoadForwardAndGreedyDecode()
    {
        string folder = Fixtures.Dir("opt-tiny");

        // --- README example ---
        using var lm = CausalLM.Load(folder, new CausalLMLoadOptions { DeviceName = "cpu", DType = ScalarType.Float32 });
        using var scope = NewDisposeScope();
        var ids = tensor(new long[,] { { 2, 17, 43, 8 } });        // token ids from the tokenizer, BOS first

        using (no_grad())
        {
            var output = lm.Forward(new CausalLMInput { InputIds = ids, OutputHiddenStates = true });
            // output.LastHiddenState [1, 4, d], output.Logits [1, 4, vocab], output.HiddenStates: layers + 1 tensors
            Assert.AreEqual(lm.Info.NumLayers + 1, output.HiddenStates!.Count);
            Assert.AreEqual((long)lm.Info.VocabSize, output.Logits!.shape[2]);
        }

        var sequence = CausalLMGenerator.Generate(lm, ids, attentionMask: null,
            new GenerationOptions { MaxNewTokens = 8 });              // greedy; stops at eos
        long[] newTokens = sequence[0].narrow(0, ids.shape[1], sequence.shape[1] - ids.shape[1]).data<long>().ToArray();
        // --- end of example ---

        Assert.IsTrue(newTokens.Length is > 0 and <= 8);
        Assert.IsTrue(newTokens.All(t => t >= 0 && t < lm.Info.VocabSize));
    }
}
