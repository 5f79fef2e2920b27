using static TorchSharp.torch;

namespace Gill.ML.Decoding;

/// <summary>How <see cref="CausalLMGenerator"/> picks tokens.</summary>
public sealed class GenerationOptions
{
    /// <summary>Maximum number of new tokens (default 32).</summary>
    public int MaxNewTokens { get; init; } = 32;

    /// <summary>Sample from the distribution (true) or take the arg-max (false, greedy; the default).</summary>
    public bool DoSample { get; init; }

    /// <summary>Softmax temperature when sampling (default 1).</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches <see cref="TopP"/> (the token
    /// that crosses the threshold is kept). 1 disables it.
    /// </summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Keep only the <see cref="TopK"/> most likely tokens when sampling; 0 disables it.</summary>
    public int TopK { get; init; }

    /// <summary>Seed of the sampling generator; null draws from the global generator.</summary>
    public long? Seed { get; init; }

    /// <summary>Token ids that end a sequence (the stop token is kept). Null means the model's eos id; empty disables stopping.</summary>
    public IReadOnlyCollection<long>? StopTokenIds { get; init; }

    /// <summary>Id written after a sequence has stopped. Null means the model's pad id, else its eos id, else 0.</summary>
    public long? PadTokenId { get; init; }

    /// <summary>Reuse keys and values of earlier positions (true, default) or recompute the whole sequence each step.</summary>
    public bool UseCache { get; init; } = true;

    /// <summary>
    /// Called each step with the step index and the next-token logits [B, V] (float32, before temperature and top-k/top-p); returns the
    /// logits to pick from (it may modify and return its argument). Used to mask or force tokens, e.g. GILL's [IMG] tokens.
    /// </summary>
    public Func<int, Tensor, Tensor>? LogitsProcessor { get; init; }

    internal void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentException($"MaxNewTokens must be ≥ 0, found {MaxNewTokens}.");
        if (!(Temperature > 0)) throw new ArgumentException($"Temperature must be > 0, found {Temperature}.");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"TopP must be in (0, 1], found {TopP}.");
        if (TopK < 0) throw new ArgumentException($"TopK must be ≥ 0, found {TopK}.");
    }
}
