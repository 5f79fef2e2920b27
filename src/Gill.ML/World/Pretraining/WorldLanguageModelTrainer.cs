using Gill.ML.Modules;
using Gill.ML.Modules.Opt;
using Gill.ML.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.World.Pretraining;

/// <summary>Figures of the language-model phase.</summary>
/// <param name="ValidationPerplexity">Per-token perplexity of the validation corpus (captions, stories, dialogues), softmax over the corpus's token ids.</param>
/// <param name="ValidationPerplexityFullVocabulary">The same with the full 50257-way softmax of the saved model.</param>
/// <param name="CaptionPerplexity">Validation captions only.</param>
/// <param name="HeldOutCaptionPerplexity">Captions of held-out colour/shape pairs (never seen in training).</param>
/// <param name="UnigramPerplexity">Perplexity of the training unigram distribution on the validation corpus (the baseline).</param>
/// <param name="TokenIdsUsed">Distinct GPT-2 ids of the corpus (the training softmax's size).</param>
/// <param name="FirstLoss">Mean loss of the first 10 steps.</param>
/// <param name="LastLoss">Mean loss of the last 10 steps.</param>
public sealed record WorldLmMetrics(
    double ValidationPerplexity, double ValidationPerplexityFullVocabulary, double CaptionPerplexity, double HeldOutCaptionPerplexity,
    double UnigramPerplexity, int TokenIdsUsed, double FirstLoss, double LastLoss);

/// <summary>Pretrains a small OPT model on the world's corpus with a softmax restricted to the ids the corpus uses.</summary>
internal static class WorldLanguageModelTrainer
{
    public static (CausalLMModel Model, WorldLmMetrics Metrics) Train(
        ShapesWorldDataset world, WorldLmOptions o, int steps, int seed,
        IProgress<(int Step, int Total, double Loss)>? progress, CancellationToken ct)
    {
        var tokenizer = GillTokenizer.Gpt2();
        int eot = Gpt2TokenizerExport.EndOfTextId;
        int[] Doc(string text) => [eot, .. tokenizer.Encode(text, addBos: false), eot];
        List<int[]> Read(ShapesSplit split) =>
            File.Exists(world.CorpusPath(split))
                ? File.ReadAllLines(world.CorpusPath(split)).Where(l => l.Length > 0).Select(Doc).ToList()
                : [];
        var train = Read(ShapesSplit.Train);
        var validation = Read(ShapesSplit.Validation);
        if (train.Count == 0) throw new InvalidDataException($"The world's training corpus '{world.CorpusPath(ShapesSplit.Train)}' is empty.");
        if (validation.Count == 0) validation = train.Take(Math.Max(1, train.Count / 10)).ToList();
        var captions = world.Images(ShapesSplit.Validation).Select(x => Doc(x.Caption)).ToList();
        var heldOut = world.Images(ShapesSplit.HeldOut).Select(x => Doc(x.Caption)).ToList();
        if (captions.Count == 0) captions = validation;

        // The ids the world's text uses (all splits; the words are the same in every split).
        var used = new SortedSet<int>(train.Concat(validation).Concat(captions).Concat(heldOut).SelectMany(d => d))
            .Concat(Read(ShapesSplit.Test).SelectMany(d => d)).Distinct().OrderBy(i => i).ToArray();
        var toRestricted = Enumerable.Repeat(-1L, 50257).ToArray();
        for (int i = 0; i < used.Length; i++) toRestricted[used[i]] = i;

        int maxDoc = validation.Concat(captions).Concat(heldOut).Max(d => d.Length);
        var config = new OptConfig
        {
            VocabSize = 50257, HiddenSize = o.HiddenSize, WordEmbedProjDim = o.HiddenSize, FfnDim = o.FfnDim, NumHiddenLayers = o.Layers,
            NumAttentionHeads = o.Heads, MaxPositionEmbeddings = Math.Max(o.Window, Math.Min(2048, maxDoc)), Dropout = 0.0, AttentionDropout = 0.0,
            ActivationFunction = "relu", DoLayerNormBefore = true, BosTokenId = eot, EosTokenId = eot, PadTokenId = eot,
        };
        // The default generator too: modules are built with default initialisations before the seeded re-initialisation.
        var model = GlobalRandom.Seeded(seed, () => CausalLM.Create(config, seed: seed));
        try
        {
            model.SetTrainable(true);
            var stream = train.SelectMany(d => d).Select(i => (long)i).ToArray();
            int window = (int)Math.Min(o.Window, stream.Length - 1);
            using var streamT = torch.tensor(stream);
            using var mapT = torch.tensor(toRestricted);
            using var usedT = torch.tensor(used.Select(i => (long)i).ToArray());
            var parameters = model.parameters().Where(p => p.requires_grad).ToList();
            using var optimizer = torch.optim.AdamW(parameters, o.LearningRate, beta1: 0.9, beta2: 0.98, weight_decay: 0.01);
            var gen = new torch.Generator((ulong)seed);
            var losses = new List<double>(steps);
            int warmup = Math.Min(50, steps / 10);
            using var offsets = torch.arange(window + 1).unsqueeze(0);
            for (int step = 0; step < steps; step++)
            {
                ct.ThrowIfCancellationRequested();
                double lr = step < warmup ? o.LearningRate * (step + 1) / warmup
                    : o.LearningRate * (0.05 + 0.95 * 0.5 * (1 + Math.Cos(Math.PI * (step - warmup) / Math.Max(1, steps - warmup))));
                foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
                using var scope = torch.NewDisposeScope();
                var starts = torch.randint(0, stream.Length - window, [o.BatchSize, 1], generator: gen);
                var rows = streamT.index_select(0, (starts + offsets).flatten()).view(o.BatchSize, window + 1);
                var x = rows.narrow(1, 0, window);
                var y = mapT.index_select(0, rows.narrow(1, 1, window).flatten());
                var loss = RestrictedLoss(model, x, y, usedT);
                optimizer.zero_grad();
                loss.backward();
                torch.nn.utils.clip_grad_norm_(parameters, 1.0);
                optimizer.step();
                double value = loss.item<float>();
                losses.Add(value);
                if (progress is not null && (step % 10 == 0 || step == steps - 1)) progress.Report((step + 1, steps, value));
            }
            model.SetTrainable(false);

            double unigram = UnigramPerplexity(train, validation, used.Length);
            var metrics = new WorldLmMetrics(
                Perplexity(model, validation, mapT, usedT, restricted: true),
                Perplexity(model, validation, mapT, usedT, restricted: false),
                Perplexity(model, captions, mapT, usedT, restricted: true),
                heldOut.Count == 0 ? double.NaN : Perplexity(model, heldOut, mapT, usedT, restricted: true),
                unigram, used.Length, losses.Take(10).Average(), losses.TakeLast(10).Average());
            return (model, metrics);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private static Tensor RestrictedLoss(CausalLMModel model, Tensor x, Tensor yRestricted, Tensor usedIds)
    {
        var output = model.Forward(new CausalLMInput { InputIds = x, ComputeLogits = false });
        var h = output.LastHiddenState;
        var w = model.InputEmbeddingWeight.index_select(0, usedIds);
        var logits = h.reshape(-1, h.shape[^1]).matmul(w.t());
        return torch.nn.functional.cross_entropy(logits, yRestricted);
    }

    /// <summary>exp(mean NLL per predicted token) over documents (each scored from its leading end-of-text token).</summary>
    internal static double Perplexity(CausalLMModel model, IReadOnlyList<int[]> docs, Tensor map, Tensor usedIds, bool restricted, int batch = 32)
    {
        using var noGrad = torch.no_grad();
        double nll = 0;
        long count = 0;
        long maxLen = model.Config is OptConfig c ? c.MaxPositionEmbeddings : 2048;
        var ordered = docs.Select(d => d.Length > maxLen ? d[..(int)maxLen] : d).OrderBy(d => d.Length).ToList();
        for (int i = 0; i < ordered.Count; i += batch)
        {
            using var scope = torch.NewDisposeScope();
            var part = ordered.Skip(i).Take(batch).ToList();
            int t = part.Max(d => d.Length);
            var ids = new long[part.Count * t];
            var mask = new long[part.Count * t];
            for (int r = 0; r < part.Count; r++)
                for (int j = 0; j < t; j++)
                {
                    ids[r * t + j] = j < part[r].Length ? part[r][j] : Gpt2TokenizerExport.EndOfTextId;
                    mask[r * t + j] = j < part[r].Length ? 1 : 0;
                }
            var idsT = torch.tensor(ids, [part.Count, t]);
            var maskT = torch.tensor(mask, [part.Count, t]);
            var h = model.Forward(new CausalLMInput { InputIds = idsT, AttentionMask = maskT, ComputeLogits = false }).LastHiddenState;
            var w = restricted ? model.InputEmbeddingWeight.index_select(0, usedIds) : model.InputEmbeddingWeight;
            var logp = torch.nn.functional.log_softmax(h.narrow(1, 0, t - 1).matmul(w.t()), -1);
            var target = idsT.narrow(1, 1, t - 1);
            if (restricted) target = map.index_select(0, target.flatten()).view(part.Count, t - 1);
            var picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1);
            var valid = maskT.narrow(1, 1, t - 1).to(ScalarType.Float32);
            nll -= (picked * valid).sum().item<float>();
            count += (long)valid.sum().item<float>();
        }
        return Math.Exp(nll / Math.Max(1, count));
    }

    private static double UnigramPerplexity(List<int[]> train, List<int[]> validation, int vocabulary)
    {
        var counts = new Dictionary<int, long>();
        long total = 0;
        foreach (var d in train) foreach (var id in d.Skip(1)) { counts[id] = counts.GetValueOrDefault(id) + 1; total++; }
        double nll = 0;
        long n = 0;
        foreach (var d in validation)
            foreach (var id in d.Skip(1))
            {
                nll -= Math.Log((counts.GetValueOrDefault(id) + 1.0) / (total + vocabulary));
                n++;
            }
        return Math.Exp(nll / Math.Max(1, n));
    }
}
