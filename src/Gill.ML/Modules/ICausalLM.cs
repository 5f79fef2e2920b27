using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>Architecture facts every causal LM backbone exposes (read from its config.json).</summary>
public sealed record CausalLMInfo(
    string ModelType,
    int VocabSize,
    int HiddenSize,
    int InputEmbeddingSize,
    int NumLayers,
    int NumHeads,
    int MaxPositions,
    int? BosTokenId,
    int? EosTokenId,
    int? PadTokenId);

/// <summary>Input of one causal-LM forward pass. Exactly one of <see cref="InputIds"/> or <see cref="InputsEmbeds"/>.</summary>
public sealed class CausalLMInput
{
    /// <summary>Token ids [B, T] (int64).</summary>
    public Tensor? InputIds { get; init; }

    /// <summary>Input embeddings [B, T, InputEmbeddingSize] (what GILL splices visual tokens and [IMG] rows into).</summary>
    public Tensor? InputsEmbeds { get; init; }

    /// <summary>Attention mask [B, past + T] (1 = attend, 0 = padding), left padding supported. Null = all ones.</summary>
    public Tensor? AttentionMask { get; init; }

    /// <summary>KV cache from earlier steps; it is extended in place with this step's keys and values.</summary>
    public KVCache? Cache { get; init; }

    /// <summary>Return every layer's hidden states (embedding output first; the last is after the final norm).</summary>
    public bool OutputHiddenStates { get; init; }

    /// <summary>Compute logits over the vocabulary (set false when only hidden states are needed).</summary>
    public bool ComputeLogits { get; init; } = true;
}

/// <summary>Output of a causal-LM forward pass. The tensors belong to the caller's dispose scope.</summary>
public sealed class CausalLMOutput
{
    /// <summary>Last hidden state after the final layer norm (and project_out for OPT-350m) [B, T, InputEmbeddingSize]; logits are this times the tied embedding matrix transposed.</summary>
    public required Tensor LastHiddenState { get; init; }

    /// <summary>Logits [B, T, V] when requested.</summary>
    public Tensor? Logits { get; init; }

    /// <summary>Hidden states per layer when requested (count = layers + 1).</summary>
    public IReadOnlyList<Tensor>? HiddenStates { get; init; }
}

/// <summary>
/// Per-layer key/value cache for incremental decoding. Owns its tensors (detached from dispose scopes) until disposed.
/// </summary>
public sealed class KVCache : IDisposable
{
    private readonly Tensor?[] _keys;
    private readonly Tensor?[] _values;

    /// <summary>Creates an empty cache for <paramref name="numLayers"/> layers.</summary>
    public KVCache(int numLayers)
    {
        _keys = new Tensor?[numLayers];
        _values = new Tensor?[numLayers];
    }

    /// <summary>Number of cached positions (0 when empty).</summary>
    public long Length => _keys[0] is null ? 0 : _keys[0]!.shape[2];

    /// <summary>Number of cached batch rows (0 when empty).</summary>
    public long BatchSize => _keys[0] is null ? 0 : _keys[0]!.shape[0];

    /// <summary>Number of layers the cache was created for.</summary>
    public int NumLayers => _keys.Length;

    /// <summary>
    /// Appends this step's keys/values [B, heads, T, headDim] for a layer and returns the full keys/values (in the
    /// caller's dispose scope).
    /// </summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor keys, Tensor values)
    {
        Tensor k, v;
        if (_keys[layer] is null)
        {
            k = keys.detach().clone();
            v = values.detach().clone();
        }
        else
        {
            k = torch.cat(new[] { _keys[layer]!, keys.detach() }, 2);
            v = torch.cat(new[] { _values[layer]!, values.detach() }, 2);
            _keys[layer]!.Dispose();
            _values[layer]!.Dispose();
        }
        _keys[layer] = k.DetachFromDisposeScope();
        _values[layer] = v.DetachFromDisposeScope();
        return (k.alias(), v.alias());
    }

    /// <summary>Keeps only the given batch rows (e.g. after some sequences finished).</summary>
    public void SelectRows(Tensor rowIndices)
    {
        for (int i = 0; i < _keys.Length; i++)
        {
            if (_keys[i] is null) continue;
            var k = _keys[i]!.index_select(0, rowIndices).DetachFromDisposeScope();
            var v = _values[i]!.index_select(0, rowIndices).DetachFromDisposeScope();
            _keys[i]!.Dispose(); _values[i]!.Dispose();
            _keys[i] = k; _values[i] = v;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        for (int i = 0; i < _keys.Length; i++)
        {
            _keys[i]?.Dispose(); _values[i]?.Dispose();
            _keys[i] = null; _values[i] = null;
        }
    }
}

/// <summary>
/// A causal language model backbone (OPT, GPT-2, …). GILL is model-agnostic: it needs input embeddings, forward from
/// embeddings with hidden states, logits with the tied unembedding, and a KV cache for decoding.
/// </summary>
public interface ICausalLM : IDisposable
{
    /// <summary>Architecture facts.</summary>
    CausalLMInfo Info { get; }

    /// <summary>The input embedding matrix [V, InputEmbeddingSize] (tied to the output projection).</summary>
    Tensor InputEmbeddingWeight { get; }

    /// <summary>Looks up input embeddings for ids [B, T] → [B, T, InputEmbeddingSize].</summary>
    Tensor EmbedTokens(Tensor inputIds);

    /// <summary>Runs the model.</summary>
    CausalLMOutput Forward(CausalLMInput input);

    /// <summary>Device of the parameters.</summary>
    Device Device { get; }

    /// <summary>Element type of the parameters.</summary>
    ScalarType DType { get; }

    /// <summary>Freezes or unfreezes every parameter (requires_grad). Frozen is the default for GILL.</summary>
    void SetTrainable(bool trainable);
}
