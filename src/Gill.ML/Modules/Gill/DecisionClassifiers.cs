using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Gill.ML.Modules;

/// <summary>Which retrieve-or-generate classifier to use.</summary>
public enum GillDecisionKind
{
    /// <summary>
    /// The released classifier (<c>decision_model.pth.tar</c>): Dropout(0.5) then Linear(D, 2) on the raw [IMG0]
    /// hidden state; classes 0 = generate, 1 = retrieve; cross-entropy; decision = argmax.
    /// </summary>
    Released,

    /// <summary>
    /// The paper's classifier (§3.3): Linear(D + 1, 1) on the [IMG0] hidden state concatenated with the maximum cosine
    /// similarity against the retrieval candidates; one logit for "retrieve", binary cross-entropy; decision = logit &gt; 0.
    /// </summary>
    PaperWithMaxScore,
}

/// <summary>
/// The released GILL decision model: <c>nn.Sequential(nn.Dropout(0.5), nn.Linear(D, 2))</c>, keys <c>1.weight</c> and
/// <c>1.bias</c>. Input: [IMG0] hidden state [B, D]; output: logits [B, 2] (0 = gen, 1 = ret).
/// </summary>
internal sealed class ReleasedDecisionClassifier : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "0")] private readonly Dropout dropout;
    [ComponentName(Name = "1")] private readonly Linear linear;

    public ReleasedDecisionClassifier(int hiddenDim, double dropoutProbability = 0.5) : base("DecisionModel")
    {
        dropout = nn.Dropout(dropoutProbability);
        linear = nn.Linear(hiddenDim, 2);
        RegisterComponents();
    }

    public override Tensor forward(Tensor imgHidden)
    {
        using var scope = torch.NewDisposeScope();
        return linear.forward(dropout.forward(imgHidden)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The paper's decision model: Linear(D + 1, 1) on [h_[IMG0] ; max cosine score]. Keys <c>fc.weight</c>, <c>fc.bias</c>.
/// Input: [B, D + 1]; output: one logit per row [B] (positive = retrieve).
/// </summary>
internal sealed class PaperDecisionClassifier : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "fc")] private readonly Linear fc;

    public PaperDecisionClassifier(int hiddenDim) : base("PaperDecisionModel")
    {
        fc = nn.Linear(hiddenDim + 1, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor features)
    {
        using var scope = torch.NewDisposeScope();
        return fc.forward(features).squeeze(-1).MoveToOuterDisposeScope();
    }
}

/// <summary>Shared loss for the two classifier kinds.</summary>
internal static class DecisionLosses
{
    /// <summary>Cross-entropy over 2 classes (released) or BCE-with-logits on one logit (paper).</summary>
    public static Tensor Loss(GillDecisionKind kind, Tensor output, Tensor labels) => kind switch
    {
        GillDecisionKind.Released => F.cross_entropy(output, labels),
        GillDecisionKind.PaperWithMaxScore => F.binary_cross_entropy_with_logits(output, labels.to(output.dtype)),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>Predicted class per row: 0 = generate, 1 = retrieve.</summary>
    public static Tensor Predict(GillDecisionKind kind, Tensor output) => kind switch
    {
        GillDecisionKind.Released => output.argmax(-1),
        GillDecisionKind.PaperWithMaxScore => output.gt(0).to(ScalarType.Int64),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };
}
