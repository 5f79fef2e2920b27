using Gill.ML.Modules;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Decoding;

/// <summary>
/// Autoregressive decoding with any <see cref="ICausalLM"/>: greedy, temperature, top-k and top-p (nucleus) sampling
/// with a seeded generator, stop tokens, batches with left padding, and an optional KV cache (same tokens either way).
/// Runs without gradients and in evaluation mode (a model in training mode is switched back afterwards).
/// </summary>
public static class CausalLMGenerator
{
    /// <summary>
    /// Continues token ids [B, T] (left-padded rows marked by <paramref name="attentionMask"/>) and returns the prompt
    /// followed by the new tokens [B, T + n]; rows that stopped early are filled with the pad id. The result belongs to
    /// the caller's dispose scope.
    /// </summary>
    public static Tensor Generate(ICausalLM model, Tensor inputIds, Tensor? attentionMask = null, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (inputIds.dim() != 2) throw new ArgumentException($"inputIds must be [B, T], found {SafeTensors.FormatShape(inputIds.shape)}.", nameof(inputIds));
        using var scope = NewDisposeScope();
        var generated = Run(model, inputIds, null, attentionMask, options ?? new GenerationOptions());
        return cat(new[] { inputIds.to(ScalarType.Int64, generated.device), generated }, 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Continues a prompt given as input embeddings [B, T, InputEmbeddingSize] (e.g. text with spliced visual tokens) and
    /// returns only the new tokens [B, n]. The result belongs to the caller's dispose scope.
    /// </summary>
    public static Tensor GenerateFromEmbeddings(ICausalLM model, Tensor inputsEmbeds, Tensor? attentionMask = null, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(inputsEmbeds);
        if (inputsEmbeds.dim() != 3) throw new ArgumentException($"inputsEmbeds must be [B, T, D], found {SafeTensors.FormatShape(inputsEmbeds.shape)}.", nameof(inputsEmbeds));
        using var scope = NewDisposeScope();
        return Run(model, null, inputsEmbeds, attentionMask, options ?? new GenerationOptions()).MoveToOuterDisposeScope();
    }

    private static Tensor Run(ICausalLM model, Tensor? promptIds, Tensor? promptEmbeds, Tensor? attentionMask, GenerationOptions o)
    {
        ArgumentNullException.ThrowIfNull(model);
        o.Validate();
        var device = model.Device;
        var prompt = (promptIds ?? promptEmbeds)!;
        long b = prompt.shape[0], t = prompt.shape[1];
        if (t == 0) throw new ArgumentException("The prompt is empty (T = 0).");
        if (attentionMask is not null && (attentionMask.dim() != 2 || attentionMask.shape[0] != b || attentionMask.shape[1] != t))
            throw new ArgumentException($"attentionMask must be [{b}, {t}] like the prompt, found {SafeTensors.FormatShape(attentionMask.shape)}.", nameof(attentionMask));
        var stopIds = (o.StopTokenIds ?? (model.Info.EosTokenId is int eos ? new long[] { eos } : Array.Empty<long>())).ToArray();
        long pad = o.PadTokenId ?? model.Info.PadTokenId ?? model.Info.EosTokenId ?? 0;

        var module = model as nn.Module;
        bool wasTraining = module?.training ?? false;
        if (wasTraining) module!.eval();
        using var noGrad = no_grad();
        using var generator = o.DoSample && o.Seed is long seed ? new Generator((ulong)seed, device) : null;
        using var cache = o.UseCache ? new KVCache(model.Info.NumLayers) : null;
        var ids = promptIds?.to(ScalarType.Int64, device);
        var embeds = promptEmbeds?.to(model.DType, device);
        // loop state owned here (detached from scopes, replaced and disposed step by step)
        var mask = (attentionMask?.to(ScalarType.Int64, device) ?? ones(new[] { b, t }, ScalarType.Int64, device)).clone().DetachFromDisposeScope();
        var finished = zeros(new[] { b }, ScalarType.Bool, device).DetachFromDisposeScope();
        var stop = tensor(stopIds, ScalarType.Int64, device);
        var tokens = new List<Tensor>();
        try
        {
            for (int step = 0; step < o.MaxNewTokens; step++)
            {
                using var stepScope = NewDisposeScope();
                CausalLMInput input;
                if (cache is not null && step > 0)
                    input = new CausalLMInput { InputIds = tokens[^1].unsqueeze(1), AttentionMask = mask, Cache = cache };
                else if (cache is not null || step == 0)
                    input = new CausalLMInput { InputIds = ids, InputsEmbeds = embeds, AttentionMask = mask, Cache = cache };
                else
                {
                    var newIds = stack(tokens, 1);
                    input = ids is not null
                        ? new CausalLMInput { InputIds = cat(new[] { ids, newIds }, 1), AttentionMask = mask }
                        : new CausalLMInput { InputsEmbeds = cat(new[] { embeds!, model.EmbedTokens(newIds) }, 1), AttentionMask = mask };
                }
                var output = model.Forward(input);
                var logits = output.Logits!.select(1, -1).to(ScalarType.Float32);
                if (o.LogitsProcessor is { } processor)
                {
                    logits = processor(step, logits);
                    if (logits.dim() != 2 || logits.shape[0] != b)
                        throw new InvalidOperationException($"LogitsProcessor must return logits [{b}, V], returned {SafeTensors.FormatShape(logits.shape)}.");
                }
                var next = Pick(logits, o, generator);
                next = where(finished, full_like(next, pad), next);
                tokens.Add(next.DetachFromDisposeScope());
                var newFinished = finished.logical_or(isin(next, stop)).DetachFromDisposeScope();
                var newMask = cat(new[] { mask, ones(new[] { b, 1 }, ScalarType.Int64, device) }, 1).DetachFromDisposeScope();
                finished.Dispose(); finished = newFinished;
                mask.Dispose(); mask = newMask;
                if (finished.all().item<bool>()) break;
            }
            return tokens.Count == 0 ? empty(new[] { b, 0L }, ScalarType.Int64, device) : stack(tokens, 1);
        }
        finally
        {
            foreach (var tok in tokens) tok.Dispose();
            mask.Dispose();
            finished.Dispose();
            if (wasTraining) module!.train();
        }
    }

    private static Tensor Pick(Tensor logits, GenerationOptions o, Generator? generator)
    {
        if (!o.DoSample) return logits.argmax(-1);
        if (o.Temperature != 1.0) logits = logits / o.Temperature;
        if (o.TopK > 0 && o.TopK < logits.shape[1])
        {
            var kth = logits.topk(o.TopK, -1).values.narrow(1, o.TopK - 1, 1);
            logits = logits.MaskedFill(logits < kth, double.NegativeInfinity);
        }
        if (o.TopP < 1.0)
        {
            var (sorted, order) = logits.sort(-1, descending: true);
            var probs = softmax(sorted, -1);
            // mass before each token; a token is kept while that mass is below top_p, so the crossing token stays
            var before = probs.cumsum(-1) - probs;
            var removeSorted = before >= o.TopP;
            var remove = zeros_like(removeSorted).scatter(1, order, removeSorted);
            logits = logits.MaskedFill(remove, double.NegativeInfinity);
        }
        return softmax(logits, -1).multinomial(1, generator: generator).squeeze(1);
    }
}
