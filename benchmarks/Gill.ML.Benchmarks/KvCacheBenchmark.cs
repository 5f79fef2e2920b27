using Gill.ML.Decoding;
using Gill.ML.Modules;
using Gill.ML.Modules.Opt;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Benchmarks;

/// <summary>Greedy decoding speed with and without the KV cache on a small random OPT.</summary>
internal sealed class KvCacheBenchmark : IBenchmark
{
    public string Name => "KvCache";

    public string Description => "tokens/s of greedy decoding with and without KV cache (random OPT d=256, 4 layers); args: [runs] [threads] [lengths, e.g. 64,256]";

    public int Run(string[] args)
    {
        int runs = args.Length > 0 ? int.Parse(args[0]) : 5;
        if (args.Length > 1) torch.set_num_threads(int.Parse(args[1]));
        var lengths = args.Length > 2 ? args[2].Split(',').Select(int.Parse).ToArray() : new[] { 64, 256 };
        var config = new OptConfig
        {
            VocabSize = 8192, HiddenSize = 256, FfnDim = 1024, NumHiddenLayers = 4, NumAttentionHeads = 4,
            MaxPositionEmbeddings = 512, WordEmbedProjDim = 256,
        };
        using var lm = CausalLM.Create(config, seed: 1);
        using var gen = new Generator(7);
        var prompt = torch.randint(3, config.VocabSize, new long[] { 1, 16 }, generator: gen).DetachFromDisposeScope();
        Console.WriteLine($"random OPT d={config.HiddenSize}, {config.NumHiddenLayers} layers, vocab {config.VocabSize}, prompt 16 tokens, batch 1, threads {torch.get_num_threads()}, median of {runs}");
        foreach (int n in lengths)
        {
            var rates = new Dictionary<bool, double>();
            foreach (bool cache in new[] { true, false })
            {
                var options = new GenerationOptions { MaxNewTokens = n, UseCache = cache, StopTokenIds = Array.Empty<long>() };
                var times = Measure.Time(() =>
                {
                    using var scope = NewDisposeScope();
                    CausalLMGenerator.Generate(lm, prompt, null, options);
                }, runs, 1);
                rates[cache] = n / Measure.Median(times);
                Console.WriteLine($"{n,4} new tokens, cache {(cache ? "on " : "off")}: {rates[cache],8:F1} tokens/s  ({Measure.Summary(times)} per sequence)");
            }
            Console.WriteLine($"{n,4} new tokens: cache speed-up {rates[true] / rates[false]:F2}x");
        }
        prompt.Dispose();
        return 0;
    }
}
