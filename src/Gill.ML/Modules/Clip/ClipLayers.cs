using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Gill.ML.Modules.Clip;

/// <summary>The MLP activations a CLIP config may name in <c>hidden_act</c>.</summary>
internal static class ClipActivation
{
    private static readonly string[] Known = ["quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"];

    public static void Check(string name, string source)
    {
        if (!Known.Contains(name))
            throw new InvalidDataException($"Invalid CLIP configuration in '{source}': unsupported hidden_act '{name}' (supported: {string.Join(", ", Known)}).");
    }

    public static Tensor Apply(string name, Tensor x) => name switch
    {
        "quick_gelu" => x * torch.sigmoid(x * 1.702),
        "gelu" => x.gelu(),
        "gelu_new" or "gelu_pytorch_tanh" => x.gelu(GELU.Approximate.tanh),
        "relu" => nn.functional.relu(x),
        _ => throw new InvalidOperationException($"Unsupported hidden_act '{name}'."),
    };
}

/// <summary>Multi-head self-attention of a CLIP encoder layer (HF <c>CLIPAttention</c>: q/k/v/out projections with bias).</summary>
internal sealed class ClipAttention : nn.Module
{
    private readonly int _heads;
    private readonly int _headDim;
    private readonly double _scale;

    [ComponentName(Name = "k_proj")] private readonly Linear kProj;
    [ComponentName(Name = "v_proj")] private readonly Linear vProj;
    [ComponentName(Name = "q_proj")] private readonly Linear qProj;
    [ComponentName(Name = "out_proj")] private readonly Linear outProj;

    public ClipAttention(int hidden, int heads) : base(nameof(ClipAttention))
    {
        _heads = heads;
        _headDim = hidden / heads;
        _scale = Math.Pow(_headDim, -0.5);
        kProj = nn.Linear(hidden, hidden);
        vProj = nn.Linear(hidden, hidden);
        qProj = nn.Linear(hidden, hidden);
        outProj = nn.Linear(hidden, hidden);
        RegisterComponents();
    }

    /// <param name="x">[B, T, D].</param>
    /// <param name="masked">Optional boolean [B or 1, 1, T, T]; true where a query must not attend to a key.</param>
    public Tensor Forward(Tensor x, Tensor? masked)
    {
        using var scope = torch.NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        var q = (qProj.forward(x) * _scale).view(b, t, _heads, _headDim).transpose(1, 2);
        var k = kProj.forward(x).view(b, t, _heads, _headDim).transpose(1, 2);
        var v = vProj.forward(x).view(b, t, _heads, _headDim).transpose(1, 2);
        var scores = torch.matmul(q, k.transpose(-1, -2));
        if (masked is not null)
            scores = scores.MaskedFill(masked, MinValue(scores.dtype));
        var probs = torch.softmax(scores, -1, ScalarType.Float32).to(v.dtype);
        var ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, _heads * _headDim);
        return outProj.forward(ctx).MoveToOuterDisposeScope();
    }

    internal static double MinValue(ScalarType dtype) => dtype switch
    {
        ScalarType.Float16 => -65504.0,
        ScalarType.BFloat16 => -3.3895313892515355e38,
        ScalarType.Float64 => double.MinValue,
        _ => float.MinValue,
    };

    internal void Initialize(int hidden, int layers, double factor)
    {
        double inStd = Math.Pow(hidden, -0.5) * Math.Pow(2.0 * layers, -0.5) * factor;
        double outStd = Math.Pow(hidden, -0.5) * factor;
        using var noGrad = torch.no_grad();
        foreach (var l in new[] { qProj, kProj, vProj })
        {
            nn.init.normal_(l.weight!, 0, inStd);
            l.bias!.zero_();
        }
        nn.init.normal_(outProj.weight!, 0, outStd);
        outProj.bias!.zero_();
    }
}

/// <summary>The feed-forward block of a CLIP encoder layer (HF <c>CLIPMLP</c>).</summary>
internal sealed class ClipMlp : nn.Module<Tensor, Tensor>
{
    private readonly string _act;

    [ComponentName(Name = "fc1")] private readonly Linear fc1;
    [ComponentName(Name = "fc2")] private readonly Linear fc2;

    public ClipMlp(int hidden, int intermediate, string act) : base(nameof(ClipMlp))
    {
        _act = act;
        fc1 = nn.Linear(hidden, intermediate);
        fc2 = nn.Linear(intermediate, hidden);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var h = fc1.forward(x);
        using var a = ClipActivation.Apply(_act, h);
        return fc2.forward(a);
    }

    internal void Initialize(int hidden, int layers, double factor)
    {
        double inStd = Math.Pow(hidden, -0.5) * Math.Pow(2.0 * layers, -0.5) * factor;
        double fcStd = Math.Pow(2.0 * hidden, -0.5) * factor;
        using var noGrad = torch.no_grad();
        nn.init.normal_(fc1.weight!, 0, fcStd);
        nn.init.normal_(fc2.weight!, 0, inStd);
        fc1.bias!.zero_();
        fc2.bias!.zero_();
    }
}

/// <summary>One pre-LN encoder layer (HF <c>CLIPEncoderLayer</c>).</summary>
internal sealed class ClipEncoderLayer : nn.Module
{
    [ComponentName(Name = "self_attn")] private readonly ClipAttention selfAttn;
    [ComponentName(Name = "layer_norm1")] private readonly LayerNorm layerNorm1;
    [ComponentName(Name = "mlp")] private readonly ClipMlp mlp;
    [ComponentName(Name = "layer_norm2")] private readonly LayerNorm layerNorm2;

    public ClipEncoderLayer(int hidden, int heads, int intermediate, string act, double eps) : base(nameof(ClipEncoderLayer))
    {
        selfAttn = new ClipAttention(hidden, heads);
        layerNorm1 = nn.LayerNorm(hidden, eps);
        mlp = new ClipMlp(hidden, intermediate, act);
        layerNorm2 = nn.LayerNorm(hidden, eps);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? masked)
    {
        using var scope = torch.NewDisposeScope();
        var h = x + selfAttn.Forward(layerNorm1.forward(x), masked);
        var y = h + mlp.forward(layerNorm2.forward(h));
        return y.MoveToOuterDisposeScope();
    }

    internal void Initialize(int hidden, int layers, double factor)
    {
        selfAttn.Initialize(hidden, layers, factor);
        mlp.Initialize(hidden, layers, factor);
        ClipInit.LayerNorm(layerNorm1);
        ClipInit.LayerNorm(layerNorm2);
    }
}

/// <summary>The stack of encoder layers (HF <c>CLIPEncoder</c>, keys <c>layers.N.*</c>).</summary>
internal sealed class ClipEncoder : nn.Module
{
    [ComponentName(Name = "layers")] private readonly ModuleList<ClipEncoderLayer> layers;

    public ClipEncoder(int count, int hidden, int heads, int intermediate, string act, double eps) : base(nameof(ClipEncoder))
    {
        layers = new ModuleList<ClipEncoderLayer>();
        for (int i = 0; i < count; i++) layers.Add(new ClipEncoderLayer(hidden, heads, intermediate, act, eps));
        RegisterComponents();
    }

    public int Count => layers.Count;

    /// <summary>
    /// Runs the layers. Returns the final state and the state before the last layer (the input for a one-layer stack);
    /// when <paramref name="hiddenStates"/> is given it receives every state (the input first, as in HF) and nothing is
    /// disposed, otherwise intermediate states are released as soon as they are used.
    /// </summary>
    public (Tensor Last, Tensor Penultimate) Forward(Tensor x, Tensor? masked, List<Tensor>? hiddenStates)
    {
        hiddenStates?.Add(x);
        Tensor h = x, previous = x;
        for (int i = 0; i < layers.Count; i++)
        {
            var next = layers[i].Forward(h, masked);
            if (hiddenStates is null && !ReferenceEquals(previous, h) && !ReferenceEquals(previous, x)) previous.Dispose();
            previous = h;
            h = next;
            hiddenStates?.Add(h);
        }
        return (h, previous);
    }

    internal void Initialize(int hidden, double factor)
    {
        foreach (var l in layers) l.Initialize(hidden, layers.Count, factor);
    }
}

internal static class ClipInit
{
    public static void LayerNorm(LayerNorm ln)
    {
        using var noGrad = torch.no_grad();
        ln.weight!.fill_(1.0);
        ln.bias!.zero_();
    }

    public static void Normal(Tensor t, double std)
    {
        using var noGrad = torch.no_grad();
        nn.init.normal_(t, 0, std);
    }
}
