using Gill.ML.Decoding;
using Gill.ML.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

[TestClass]
public class DecodingTests
{
    private const string Fixture = "opt-tiny";

    [TestMethod]
    public void GreedyReproducesPyTorchWithAndWithoutCache()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var expected = io["greedy_ids"];
        var prompt = io["input_ids"].narrow(0, 0, 1);
        Assert.AreEqual(1L, io["attention_mask"][0].min().item<long>(), "row 0 is unpadded");
        foreach (var useCache in new[] { true, false })
        {
            var ids = CausalLMGenerator.Generate(lm, prompt, null, new GenerationOptions { MaxNewTokens = 5, UseCache = useCache });
            CollectionAssert.AreEqual(expected.data<long>().ToArray(), ids.data<long>().ToArray(), $"greedy ids (cache {useCache})");
        }
    }

    [TestMethod]
    public void LeftPaddedBatchMatchesRowsDecodedAloneAndCacheDoesNotChangeTokens()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var ids = io["input_ids"];
        var mask = io["attention_mask"];
        var options = new GenerationOptions { MaxNewTokens = 12, StopTokenIds = Array.Empty<long>() };
        var cached = CausalLMGenerator.Generate(lm, ids, mask, options);
        var uncached = CausalLMGenerator.Generate(lm, ids, mask, new GenerationOptions { MaxNewTokens = 12, StopTokenIds = Array.Empty<long>(), UseCache = false });
        Assert.IsTrue(Same(cached, uncached), "KV cache must not change the tokens");
        long padLen = mask.shape[1] - mask[1].sum().item<long>();
        var row1Alone = CausalLMGenerator.Generate(lm, ids[1].narrow(0, padLen, ids.shape[1] - padLen).unsqueeze(0), null, options);
        Assert.IsTrue(Same(row1Alone[0], cached[1].narrow(0, padLen, row1Alone.shape[1])), "left padding must not change the continuation");
    }

    [TestMethod]
    public void SeededSamplingIsReproducibleAndSameWithOrWithoutCache()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        GenerationOptions Opts(long seed, bool cache) => new()
        {
            MaxNewTokens = 16, DoSample = true, Temperature = 1.5, TopP = 0.95, Seed = seed, UseCache = cache, StopTokenIds = Array.Empty<long>(),
        };
        var a = CausalLMGenerator.Generate(lm, io["input_ids"], io["attention_mask"], Opts(11, true));
        var b = CausalLMGenerator.Generate(lm, io["input_ids"], io["attention_mask"], Opts(11, true));
        var c = CausalLMGenerator.Generate(lm, io["input_ids"], io["attention_mask"], Opts(11, false));
        var d = CausalLMGenerator.Generate(lm, io["input_ids"], io["attention_mask"], Opts(12, true));
        Assert.IsTrue(Same(a, b), "same seed, same tokens");
        Assert.IsTrue(Same(a, c), "cache on/off, same tokens");
        Assert.IsFalse(Same(a, d), "another seed gives other tokens");
        var greedy = CausalLMGenerator.Generate(lm, io["input_ids"], io["attention_mask"], new GenerationOptions { MaxNewTokens = 16, StopTokenIds = Array.Empty<long>() });
        var tinyP = CausalLMGenerator.Generate(lm, io["input_ids"], io["attention_mask"], new GenerationOptions
        {
            MaxNewTokens = 16, DoSample = true, TopP = 1e-6, Seed = 3, StopTokenIds = Array.Empty<long>(),
        });
        Assert.IsTrue(Same(greedy, tinyP), "top-p below the largest probability keeps only the most likely token");
    }

    [TestMethod]
    public void TopPKeepsTheTokenThatCrossesTheThreshold()
    {
        using var scope = NewDisposeScope();
        // probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps tokens 0 and 1 (0.5 < 0.7, 0.8 crosses it), renormalised 5/8, 3/8
        using var lm = new FixedDistributionLM(new[] { 0.5, 0.3, 0.15, 0.05 });
        var prompt = zeros(new long[] { 4000, 1 }, ScalarType.Int64);
        var next = CausalLMGenerator.GenerateFromEmbeddings(lm, lm.EmbedTokens(prompt), null,
            new GenerationOptions { MaxNewTokens = 1, DoSample = true, TopP = 0.7, Seed = 5 });
        var counts = bincount(next.flatten(), minlength: 4).data<long>().ToArray();
        Assert.AreEqual(0L, counts[2] + counts[3], "tokens outside the nucleus are never drawn");
        Assert.AreEqual(0.625, counts[0] / 4000.0, 0.03);
        // top_p exactly 0.5 keeps only token 0: its mass reaches the threshold
        var only = CausalLMGenerator.GenerateFromEmbeddings(lm, lm.EmbedTokens(prompt), null,
            new GenerationOptions { MaxNewTokens = 1, DoSample = true, TopP = 0.5, Seed = 5 });
        Assert.AreEqual(0L, only.max().item<long>());
        // temperature sharpens: at T = 0.25 token 0 has probability 0.5^4 / Σ p^4
        var sharp = CausalLMGenerator.GenerateFromEmbeddings(lm, lm.EmbedTokens(prompt), null,
            new GenerationOptions { MaxNewTokens = 1, DoSample = true, Temperature = 0.25, Seed = 5 });
        double p0 = Math.Pow(0.5, 4) / (Math.Pow(0.5, 4) + Math.Pow(0.3, 4) + Math.Pow(0.15, 4) + Math.Pow(0.05, 4));
        Assert.AreEqual(p0, sharp.eq(0).sum().item<long>() / 4000.0, 0.03);
    }

    [TestMethod]
    public void StopTokensEndRowsAndFinishedRowsArePadded()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var ids = io["input_ids"];
        var mask = io["attention_mask"];
        long t = ids.shape[1];
        var free = CausalLMGenerator.Generate(lm, ids, mask, new GenerationOptions { MaxNewTokens = 10, StopTokenIds = Array.Empty<long>() });
        long stopId = free[0, t + 2].item<long>();
        var stopped = CausalLMGenerator.Generate(lm, ids, mask, new GenerationOptions { MaxNewTokens = 10, StopTokenIds = new[] { stopId }, PadTokenId = 1 });
        // expected: each row as free-running up to and including its first stop token, pad (1) afterwards; the batch ends
        // when every row has stopped
        var rows = new List<long[]>();
        int longest = 0;
        for (long r = 0; r < 2; r++)
        {
            var gen = free[r].narrow(0, t, 10).data<long>().ToArray();
            int end = Array.IndexOf(gen, stopId);
            rows.Add(end < 0 ? gen : gen.Take(end + 1).Concat(Enumerable.Repeat(1L, 10 - end - 1)).ToArray());
            longest = Math.Max(longest, end < 0 ? 10 : end + 1);
        }
        Assert.AreEqual(t + longest, stopped.shape[1]);
        for (int r = 0; r < 2; r++)
            CollectionAssert.AreEqual(rows[r].Take(longest).ToArray(), stopped[r].narrow(0, t, longest).data<long>().ToArray(), $"row {r}");
    }

    [TestMethod]
    public void LogitsProcessorCanForceTokens()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var steps = new List<int>();
        var options = new GenerationOptions
        {
            MaxNewTokens = 4,
            StopTokenIds = Array.Empty<long>(),
            LogitsProcessor = (step, logits) =>
            {
                steps.Add(step);
                if (step != 1) return logits;
                var forced = full_like(logits, double.NegativeInfinity);
                forced[.., 42] = 0;
                return forced;
            },
        };
        var ids = CausalLMGenerator.Generate(lm, io["input_ids"], io["attention_mask"], options);
        CollectionAssert.AreEqual(new[] { 0, 1, 2, 3 }, steps);
        long t = io["input_ids"].shape[1];
        Assert.IsTrue(ids.select(1, t + 1).eq(42).all().item<bool>(), "[IMG]-style forced token at step 1");
    }

    [TestMethod]
    public void EmbeddingPromptContinuesLikeIdPrompt()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        var ids = io["input_ids"];
        var mask = io["attention_mask"];
        foreach (var useCache in new[] { true, false })
        {
            var options = new GenerationOptions { MaxNewTokens = 6, StopTokenIds = Array.Empty<long>(), UseCache = useCache };
            var fromIds = CausalLMGenerator.Generate(lm, ids, mask, options).narrow(1, ids.shape[1], 6);
            var fromEmbeds = CausalLMGenerator.GenerateFromEmbeddings(lm, lm.EmbedTokens(ids), mask, options);
            Assert.IsTrue(Same(fromIds, fromEmbeds), $"cache {useCache}");
        }
    }

    [TestMethod]
    public void DecodingDoesNotLeakTensors()
    {
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        foreach (var useCache in new[] { true, false })
            foreach (int n in new[] { 3, 12 })
            {
                long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
                using (var scope = NewDisposeScope())
                {
                    var ids = CausalLMGenerator.Generate(lm, io["input_ids"], io["attention_mask"],
                        new GenerationOptions { MaxNewTokens = n, DoSample = true, Seed = 1, StopTokenIds = Array.Empty<long>(), UseCache = useCache });
                    Assert.AreEqual(io["input_ids"].shape[1] + n, ids.shape[1]);
                }
                long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
                Assert.AreEqual(before, after, $"live tensors grew by {after - before} (cache {useCache}, {n} tokens)");
            }
        foreach (var t in io.Values) t.Dispose();
    }

    [TestMethod]
    public void TrainingModeIsRestoredAndBadOptionsAreRejected()
    {
        using var scope = NewDisposeScope();
        var io = Fixtures.Io(Fixture);
        using var lm = CausalLM.Load(Fixtures.Dir(Fixture));
        lm.SetTrainable(true);
        var a = CausalLMGenerator.Generate(lm, io["input_ids"], io["attention_mask"], new GenerationOptions { MaxNewTokens = 4 });
        var b = CausalLMGenerator.Generate(lm, io["input_ids"], io["attention_mask"], new GenerationOptions { MaxNewTokens = 4 });
        Assert.IsTrue(Same(a, b), "decoding runs without dropout");
        Assert.IsTrue(lm.training, "training mode restored");
        Assert.Throws<ArgumentException>(() => CausalLMGenerator.Generate(lm, io["input_ids"], null, new GenerationOptions { TopP = 0 }));
        Assert.Throws<ArgumentException>(() => CausalLMGenerator.Generate(lm, io["input_ids"], ones(1, 3), new GenerationOptions()));
        var none = CausalLMGenerator.Generate(lm, io["input_ids"], null, new GenerationOptions { MaxNewTokens = 0 });
        Assert.IsTrue(Same(none, io["input_ids"]));
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    /// <summary>A stand-in LM whose next-token distribution is fixed (to check the samplers exactly).</summary>
    private sealed class FixedDistributionLM : ICausalLM
    {
        private readonly Tensor _logProbs;
        private readonly Tensor _embedding;

        public FixedDistributionLM(double[] probs)
        {
            _logProbs = log(tensor(probs, ScalarType.Float32)).DetachFromDisposeScope();
            _embedding = eye(probs.Length).DetachFromDisposeScope();
            Info = new CausalLMInfo("fixed", probs.Length, probs.Length, probs.Length, 1, 1, 1024, null, null, null);
        }

        public CausalLMInfo Info { get; }
        public Tensor InputEmbeddingWeight => _embedding;
        public Tensor EmbedTokens(Tensor inputIds) => nn.functional.one_hot(inputIds, _embedding.shape[0]).to(ScalarType.Float32);
        public Device Device => CPU;
        public ScalarType DType => ScalarType.Float32;
        public void SetTrainable(bool trainable) { }

        public CausalLMOutput Forward(CausalLMInput input)
        {
            var x = input.InputsEmbeds ?? EmbedTokens(input.InputIds!);
            var logits = _logProbs.expand(x.shape[0], x.shape[1], -1).clone();
            return new CausalLMOutput { LastHiddenState = x, Logits = logits };
        }

        public void Dispose() { _logProbs.Dispose(); _embedding.Dispose(); }
    }
}
