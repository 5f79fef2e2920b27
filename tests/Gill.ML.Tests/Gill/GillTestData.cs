using System.Text.Json.Nodes;
using Gill.ML.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests;

/// <summary>Builds GILL models over the tiny fixtures.</summary>
internal static class GillTestData
{
    public const string StepFixture = "gill-step-tiny";

    /// <summary>The GILL config that gill-step-tiny/config.json describes.</summary>
    public static GillConfig StepConfig()
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir(StepFixture), "config.json")))!;
        var ids = json["img_token_ids"]!.AsArray().Select(n => (int)n!).ToArray();
        return new GillConfig
        {
            NVisualTokens = (int)json["num_visual_tokens"]!,
            NumTokens = (int)json["num_img_tokens"]!,
            VisualHiddenSize = (int)json["visual_dim"]!,
            RetEmbDim = (int)json["ret_dim"]!,
            MapperHiddenDim = (int)json["mapper_hidden"]!,
            MapperNumHeads = (int)json["mapper_heads"]!,
            MapperNumEncoderLayers = (int)json["mapper_layers"]!,
            MapperNumDecoderLayers = (int)json["mapper_layers"]!,
            GenEmbDim = (int)json["gen_dim"]!,
            NumClipTokens = (int)json["gen_tokens"]!,
            RetrievalTokenIdx = ids,
            GenTokenIdx = ids,
            BosTokenId = (int)json["bos_token_id"]!,
            PadTokenId = (int)json["pad_token_id"]!,
            OptVersion = null,
            VisualEncoder = null,
        };
    }

    /// <summary>opt-tiny backbone + the fixture's trainable weights.</summary>
    public static GillCoreModel LoadStepModel(ScalarType lmDType = ScalarType.Float32)
    {
        var lm = CausalLM.Load(Fixtures.Dir("opt-tiny"), new CausalLMLoadOptions { DType = lmDType });
        var config = StepConfig();
        var heads = new GillHeads(config, lm.Info.InputEmbeddingSize);
        GillWeights.Load(heads, Path.Combine(Fixtures.Dir(StepFixture), "model.safetensors"));
        return new GillCoreModel(lm, config, heads, ownsLanguageModel: true);
    }

    /// <summary>The fixture's inputs as a batch.</summary>
    public static Training.GillBatch StepBatch(Dictionary<string, Tensor> io) =>
        new(io["visual_features"], io["tokens"], io["caption_len"], io["gen_targets"]);

    /// <summary>
    /// A small learnable synthetic set for opt-tiny sizes: B examples whose captions, features and targets are tied
    /// together by fixed random projections.
    /// </summary>
    public static List<Training.GillBatch> SyntheticBatches(GillConfig config, int batches, int batchSize, int seqLen, long seed, int vocab = 96)
    {
        var gen = new Random((int)seed);
        var result = new List<Training.GillBatch>();
        var proj = new float[config.VisualHiddenSize * config.NumClipTokens * config.GenEmbDim];
        for (int i = 0; i < proj.Length; i++) proj[i] = (float)(gen.NextDouble() * 2 - 1) * 0.3f;
        for (int bi = 0; bi < batches; bi++)
        {
            var feats = new List<float[]>();
            var toks = new List<long[]>();
            var lens = new List<long>();
            var targets = new List<float[]>();
            for (int e = 0; e < batchSize; e++)
            {
                int capLen = 2 + gen.Next(Math.Max(1, seqLen - config.NumTokens - 3));
                var caption = Enumerable.Range(0, capLen).Select(_ => 3 + gen.Next(vocab - 3)).ToArray();
                var (ids, len) = Training.GillSequences.Build(caption, seqLen, config.BosTokenId!.Value, config.PadTokenId!.Value, config.ImgTokenIds);
                var f = new float[config.VisualHiddenSize];
                foreach (var c in caption) f[c % config.VisualHiddenSize] += 1f;
                var t = new float[config.NumClipTokens * config.GenEmbDim];
                for (int j = 0; j < t.Length; j++)
                {
                    double s = 0;
                    for (int d = 0; d < f.Length; d++) s += f[d] * proj[d * t.Length + j];
                    t[j] = (float)Math.Tanh(s);
                }
                feats.Add(f); toks.Add(ids); lens.Add(len); targets.Add(t);
            }
            result.Add(Training.GillBatch.FromArrays(feats, toks, lens, targets, config.NumClipTokens));
        }
        foreach (var b in result)
        {
            b.VisualFeatures.DetachFromDisposeScope();
            b.TokenIds.DetachFromDisposeScope();
            b.CaptionLengths.DetachFromDisposeScope();
            b.GenerationTargets?.DetachFromDisposeScope();
        }
        return result;
    }
}

internal static class TensorTestExtensions
{
    /// <summary>Exact equality of shape and values.</summary>
    public static bool EqualTo(this Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape)) return false;
        using var eq = a.eq(b);
        using var all = eq.all();
        return all.item<bool>();
    }
}

/// <summary>
/// The tiny GILL tests run many small kernels; on a shared, oversubscribed CPU intra-op threads only add contention.
/// Each GILL test class runs single-threaded and restores the previous setting afterwards.
/// </summary>
internal static class GillTestThreads
{
    private static int _saved;

    public static void Enter()
    {
        _saved = torch.get_num_threads();
        torch.set_num_threads(1);
    }

    public static void Leave()
    {
        if (_saved > 0) torch.set_num_threads(_saved);
    }
}
