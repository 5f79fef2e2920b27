using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>
/// W_t2i: GILL's <c>TextFcLayer(mode='linear')</c> for retrieval. Its <c>model</c> = Linear(D, p) is applied to the r
/// [IMG] hidden states and only output 0 (the [IMG0] one) is kept, so it is applied to [IMG0] alone here (same
/// values and gradients). Returns the unnormalised [B, p] embedding.
/// </summary>
internal sealed class RetrievalTextHead : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "model")] private readonly Linear model;
    private readonly long _inputDim;

    public RetrievalTextHead(int inputDim, int retDim) : base("TextFcLayer")
    {
        _inputDim = inputDim;
        model = nn.Linear(inputDim, retDim);
        RegisterComponents();
    }

    /// <param name="imgHiddenStates">[B, r, D] (or [B, D] for the [IMG0] state alone).</param>
    public override Tensor forward(Tensor imgHiddenStates)
    {
        var first = imgHiddenStates.dim() switch
        {
            3 => imgHiddenStates.select(1, 0),
            2 => imgHiddenStates.alias(),
            _ => throw new ArgumentException($"Retrieval head input must be [B, r, D] or [B, D], got {Serialization.SafeTensors.FormatShape(imgHiddenStates.shape)}."),
        };
        if (first.shape[1] != _inputDim)
            throw new ArgumentException($"Retrieval head expects width {_inputDim}, got {Serialization.SafeTensors.FormatShape(imgHiddenStates.shape)}.");
        using (first) return model.forward(first);
    }
}
