using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Gill.ML.Training;

/// <summary>How the two InfoNCE directions are combined.</summary>
public enum ContrastiveReduction
{
    /// <summary>(t2i + i2t) / 2, as GILL's code.</summary>
    Average,

    /// <summary>t2i + i2t, as the paper's Eq. 4.</summary>
    Sum,
}

/// <summary>Generation (distillation) loss between mapper outputs and Stable Diffusion text embeddings.</summary>
public enum GenerationLossKind
{
    /// <summary>Mean over (batch, token) of the per-token Euclidean distance (GILL's code).</summary>
    L2,

    /// <summary>Mean squared error over every element (the paper's wording).</summary>
    Mse,
}

/// <summary>GILL's loss functions (spec §2.1). All return scalar tensors that keep the autograd graph.</summary>
public static class GillLosses
{
    /// <summary>Label value that is ignored (as Hugging Face and PyTorch use).</summary>
    public const long IgnoreIndex = -100;

    /// <summary>
    /// Hugging Face causal-LM loss: logits [B, T, V] predict labels shifted by one (position t predicts label t+1),
    /// mean over the labels that are not −100.
    /// </summary>
    public static Tensor CausalLMCrossEntropy(Tensor logits, Tensor labels)
    {
        if (logits.dim() != 3 || labels.dim() != 2 || logits.shape[0] != labels.shape[0] || logits.shape[1] != labels.shape[1])
            throw new ArgumentException($"Causal LM loss needs logits [B, T, V] and labels [B, T]; got {SafeTensors.FormatShape(logits.shape)} and {SafeTensors.FormatShape(labels.shape)}.");
        using var scope = torch.NewDisposeScope();
        long t = logits.shape[1];
        var shiftLogits = logits.narrow(1, 0, t - 1).reshape(-1, logits.shape[2]).to(ScalarType.Float32);
        var shiftLabels = labels.narrow(1, 1, t - 1).reshape(-1).to(ScalarType.Int64).to(logits.device);
        return F.cross_entropy(shiftLogits, shiftLabels, ignore_index: IgnoreIndex).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The same loss as <see cref="CausalLMCrossEntropy(Tensor, Tensor)"/>, computed from final hidden states [B, T, D]:
    /// the vocabulary projection <paramref name="logitsOf"/> runs only on the positions whose shifted label is not −100,
    /// so padding, visual-prefix and masked positions cost neither a V-wide projection nor its gradient. The value and the
    /// gradients equal the full computation's.
    /// </summary>
    public static Tensor CausalLMCrossEntropy(Func<Tensor, Tensor> logitsOf, Tensor hidden, Tensor labels)
    {
        ArgumentNullException.ThrowIfNull(logitsOf);
        if (hidden.dim() != 3 || labels.dim() != 2 || hidden.shape[0] != labels.shape[0] || hidden.shape[1] != labels.shape[1])
            throw new ArgumentException($"Causal LM loss needs hidden states [B, T, D] and labels [B, T]; got {SafeTensors.FormatShape(hidden.shape)} and {SafeTensors.FormatShape(labels.shape)}.");
        using var scope = torch.NewDisposeScope();
        long t = hidden.shape[1];
        var shiftHidden = hidden.narrow(1, 0, t - 1).reshape(-1, hidden.shape[2]);
        var shiftLabels = labels.narrow(1, 1, t - 1).reshape(-1).to(ScalarType.Int64).to(hidden.device);
        var keep = shiftLabels.ne(IgnoreIndex).nonzero().reshape(-1);
        var logits = logitsOf(shiftHidden.index_select(0, keep)).to(ScalarType.Float32);
        return F.cross_entropy(logits, shiftLabels.index_select(0, keep)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Symmetric InfoNCE with logits = exp(logit_scale)·t·vᵀ, targets on the diagonal. Returns the combined loss and the
    /// text→image and image→text terms.
    /// </summary>
    /// <param name="textEmbeddings">[N, p], L2-normalised.</param>
    /// <param name="imageEmbeddings">[N, p], L2-normalised.</param>
    /// <param name="logitScale">Log inverse temperature (scalar or [1]).</param>
    /// <param name="reduction">Average (code) or sum (paper) of the two directions.</param>
    public static (Tensor Loss, Tensor TextToImage, Tensor ImageToText) InfoNce(
        Tensor textEmbeddings, Tensor imageEmbeddings, Tensor logitScale, ContrastiveReduction reduction = ContrastiveReduction.Average)
    {
        if (textEmbeddings.dim() != 2 || !textEmbeddings.shape.SequenceEqual(imageEmbeddings.shape))
            throw new ArgumentException($"InfoNCE needs text and image embeddings of the same shape [N, p]; got {SafeTensors.FormatShape(textEmbeddings.shape)} and {SafeTensors.FormatShape(imageEmbeddings.shape)}.");
        using var scope = torch.NewDisposeScope();
        var logitsPerText = torch.matmul(textEmbeddings, imageEmbeddings.t()) * logitScale.exp().reshape(1, 1);
        var targets = torch.arange(textEmbeddings.shape[0], ScalarType.Int64, textEmbeddings.device);
        var t2i = F.cross_entropy(logitsPerText, targets);
        var i2t = F.cross_entropy(logitsPerText.t(), targets);
        var loss = reduction == ContrastiveReduction.Sum ? t2i + i2t : (t2i + i2t) / 2;
        return (loss.MoveToOuterDisposeScope(), t2i.MoveToOuterDisposeScope(), i2t.MoveToOuterDisposeScope());
    }

    /// <summary>GILL's generation loss: mean over (batch, token) of ‖output − target‖₂ along the last axis.</summary>
    public static Tensor GenerationL2(Tensor output, Tensor target)
    {
        CheckSameShape(output, target);
        using var scope = torch.NewDisposeScope();
        var d = output - target.to(output.dtype).to(output.device);
        return (d * d).sum(-1).sqrt().mean().MoveToOuterDisposeScope();
    }

    /// <summary>Mean squared error over every element.</summary>
    public static Tensor GenerationMse(Tensor output, Tensor target)
    {
        CheckSameShape(output, target);
        return F.mse_loss(output, target.to(output.dtype).to(output.device));
    }

    /// <summary>The generation loss of the given kind.</summary>
    public static Tensor Generation(Tensor output, Tensor target, GenerationLossKind kind) =>
        kind == GenerationLossKind.Mse ? GenerationMse(output, target) : GenerationL2(output, target);

    private static void CheckSameShape(Tensor output, Tensor target)
    {
        if (!output.shape.SequenceEqual(target.shape))
            throw new ArgumentException($"Generation targets {SafeTensors.FormatShape(target.shape)} do not match the mapper output {SafeTensors.FormatShape(output.shape)} (num_clip_tokens × gen_emb_dim).");
    }
}
