using System.Text.Json.Nodes;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>
/// A causal language model backbone loaded or created by <see cref="CausalLM"/>. It is a TorchSharp module (so it can be
/// trained, moved with <c>to(...)</c>, and its <c>parameters()</c> handed to an optimizer) and an <see cref="ICausalLM"/>.
/// Models start frozen and in evaluation mode; <see cref="SetTrainable"/> switches both.
/// </summary>
public abstract class CausalLMModel : nn.Module<CausalLMInput, CausalLMOutput>, ICausalLM
{
    private protected CausalLMModel(string name) : base(name) { }

    /// <inheritdoc />
    public abstract CausalLMInfo Info { get; }

    /// <summary>The configuration the model was built from (serialised as config.json by <see cref="CausalLM.Save"/>).</summary>
    public abstract CausalLMConfig Config { get; }

    /// <inheritdoc />
    public abstract Tensor InputEmbeddingWeight { get; }

    /// <inheritdoc />
    public abstract Tensor EmbedTokens(Tensor inputIds);

    /// <inheritdoc />
    public CausalLMOutput Forward(CausalLMInput input) => forward(input);

    /// <inheritdoc />
    public Device Device
    {
        get
        {
            // the embedding getter may hand out a fresh handle: keep it in a local scope
            using var scope = torch.NewDisposeScope();
            return InputEmbeddingWeight.device;
        }
    }

    /// <inheritdoc />
    public ScalarType DType
    {
        get
        {
            using var scope = torch.NewDisposeScope();
            return InputEmbeddingWeight.dtype;
        }
    }

    /// <summary>
    /// Freezes (<c>false</c>: no parameter requires grad, evaluation mode) or unfreezes (<c>true</c>: every parameter
    /// requires grad, training mode so dropout is active) the model. Call <c>eval()</c>/<c>train()</c> afterwards to
    /// choose the mode independently.
    /// </summary>
    public void SetTrainable(bool trainable)
    {
        foreach (var p in parameters()) p.requires_grad = trainable;
        if (trainable) train(); else eval();
    }

    /// <summary>Maps a module state-dict key to the key a Hugging Face checkpoint of this model stores it under.</summary>
    internal abstract string ToCheckpointKey(string moduleKey, bool withPrefix);

    /// <summary>Whether a checkpoint stores keys with the model prefix (<c>model.</c> / <c>transformer.</c>).</summary>
    internal abstract bool HasPrefix(SafeTensorsCheckpoint checkpoint);

    /// <summary>Checkpoint keys the loader skips (stored buffers, tied lm_head).</summary>
    internal abstract bool IsIgnoredCheckpointKey(string key);

    /// <summary>Extra entries that the public Hub checkpoint stores besides the parameters (e.g. GPT-2's causal-mask buffers).</summary>
    internal virtual IEnumerable<(string Key, long[] Shape)> HubExtraEntries() => Array.Empty<(string, long[])>();

    /// <summary>Re-initialises every parameter the way the reference implementation does for pretraining.</summary>
    internal abstract void InitializeWeights(Generator? generator);

    /// <summary>Checks a stored tied <c>lm_head.weight</c> (accepted, not used) against the embedding shape.</summary>
    internal void CheckTiedHead(SafeTensorsCheckpoint checkpoint)
    {
        if (checkpoint.Tensors.TryGetValue("lm_head.weight", out var head) && !head.Shape.SequenceEqual(InputEmbeddingWeight.shape))
            throw new InvalidDataException(
                $"Shape mismatch for 'lm_head.weight' in checkpoint '{checkpoint.Source}': expected {SafeTensors.FormatShape(InputEmbeddingWeight.shape)} (tied to the input embeddings), found {head.ShapeText}.");
    }
}

/// <summary>Configuration of a causal LM backbone, read from and written to a Hugging Face config.json.</summary>
public abstract record CausalLMConfig
{
    /// <summary>The <c>model_type</c> of config.json ("opt", "gpt2").</summary>
    public abstract string ModelType { get; }

    /// <summary>Serialises to the Hugging Face config.json layout.</summary>
    public abstract JsonObject ToJson(ScalarType dtype);
}
