using TorchSharp;
using TorchSharp.Utils;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Gill.ML.Modules;

/// <summary>
/// Multi-head attention with PyTorch's packed input projection: <c>in_proj_weight</c> = [W_q; W_k; W_v] (3m × m),
/// <c>in_proj_bias</c>, and <c>out_proj</c>. No mask, no dropout (GILL's mapper uses neither). Inputs are batch-first.
/// </summary>
internal sealed class PackedMultiheadAttention : nn.Module<Tensor, Tensor, Tensor>
{
    [ComponentName(Name = "in_proj_weight")] private readonly Parameter inProjWeight;
    [ComponentName(Name = "in_proj_bias")] private readonly Parameter inProjBias;
    [ComponentName(Name = "out_proj")] private readonly Linear outProj;
    private readonly int _dim;
    private readonly int _heads;

    public PackedMultiheadAttention(int dim, int heads) : base(nameof(PackedMultiheadAttention))
    {
        if (dim % heads != 0) throw new ArgumentException($"Attention width {dim} is not divisible by {heads} heads.");
        _dim = dim;
        _heads = heads;
        inProjWeight = new Parameter(torch.empty(3L * dim, dim));
        inProjBias = new Parameter(torch.zeros(3L * dim));
        outProj = nn.Linear(dim, dim);
        using (torch.no_grad())
        {
            nn.init.xavier_uniform_(inProjWeight);
            outProj.bias!.zero_();
        }
        RegisterComponents();
    }

    /// <summary>Attends from <paramref name="query"/> [B, Tq, m] to <paramref name="keyValue"/> [B, Tk, m].</summary>
    public override Tensor forward(Tensor query, Tensor keyValue)
    {
        using var scope = torch.NewDisposeScope();
        long b = query.shape[0], tq = query.shape[1], tk = keyValue.shape[1];
        int hd = _dim / _heads;
        var q = F.linear(query, inProjWeight.narrow(0, 0, _dim), inProjBias.narrow(0, 0, _dim));
        var k = F.linear(keyValue, inProjWeight.narrow(0, _dim, _dim), inProjBias.narrow(0, _dim, _dim));
        var v = F.linear(keyValue, inProjWeight.narrow(0, 2 * _dim, _dim), inProjBias.narrow(0, 2 * _dim, _dim));
        q = q.view(b, tq, _heads, hd).transpose(1, 2) * (1.0 / Math.Sqrt(hd));
        k = k.view(b, tk, _heads, hd).transpose(1, 2);
        v = v.view(b, tk, _heads, hd).transpose(1, 2);
        var attn = torch.matmul(q, k.transpose(-2, -1)).softmax(-1);
        var o = torch.matmul(attn, v).transpose(1, 2).reshape(b, tq, _dim);
        return outProj.forward(o).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// <c>nn.TransformerEncoderLayer(norm_first=True, activation=relu, dropout=0, batch_first=True)</c>:
/// x += SA(norm1 x); x += linear2(relu(linear1(norm2 x))).
/// </summary>
internal sealed class PreLnEncoderLayer : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "self_attn")] private readonly PackedMultiheadAttention selfAttn;
    [ComponentName(Name = "linear1")] private readonly Linear linear1;
    [ComponentName(Name = "linear2")] private readonly Linear linear2;
    [ComponentName(Name = "norm1")] private readonly LayerNorm norm1;
    [ComponentName(Name = "norm2")] private readonly LayerNorm norm2;

    public PreLnEncoderLayer(int dim, int heads, int ffn) : base(nameof(PreLnEncoderLayer))
    {
        selfAttn = new PackedMultiheadAttention(dim, heads);
        linear1 = nn.Linear(dim, ffn);
        linear2 = nn.Linear(ffn, dim);
        norm1 = nn.LayerNorm(dim, 1e-5);
        norm2 = nn.LayerNorm(dim, 1e-5);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var n = norm1.forward(x);
        x = x + selfAttn.forward(n, n);
        x = x + linear2.forward(F.relu(linear1.forward(norm2.forward(x))));
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// <c>nn.TransformerDecoderLayer(norm_first=True, activation=relu, dropout=0, batch_first=True)</c> without masks:
/// t += SA(norm1 t); t += XA(norm2 t, memory); t += FF(norm3 t).
/// </summary>
internal sealed class PreLnDecoderLayer : nn.Module<Tensor, Tensor, Tensor>
{
    [ComponentName(Name = "self_attn")] private readonly PackedMultiheadAttention selfAttn;
    [ComponentName(Name = "multihead_attn")] private readonly PackedMultiheadAttention crossAttn;
    [ComponentName(Name = "linear1")] private readonly Linear linear1;
    [ComponentName(Name = "linear2")] private readonly Linear linear2;
    [ComponentName(Name = "norm1")] private readonly LayerNorm norm1;
    [ComponentName(Name = "norm2")] private readonly LayerNorm norm2;
    [ComponentName(Name = "norm3")] private readonly LayerNorm norm3;

    public PreLnDecoderLayer(int dim, int heads, int ffn) : base(nameof(PreLnDecoderLayer))
    {
        selfAttn = new PackedMultiheadAttention(dim, heads);
        crossAttn = new PackedMultiheadAttention(dim, heads);
        linear1 = nn.Linear(dim, ffn);
        linear2 = nn.Linear(ffn, dim);
        norm1 = nn.LayerNorm(dim, 1e-5);
        norm2 = nn.LayerNorm(dim, 1e-5);
        norm3 = nn.LayerNorm(dim, 1e-5);
        RegisterComponents();
    }

    public override Tensor forward(Tensor t, Tensor memory)
    {
        using var scope = torch.NewDisposeScope();
        var n = norm1.forward(t);
        t = t + selfAttn.forward(n, n);
        t = t + crossAttn.forward(norm2.forward(t), memory);
        t = t + linear2.forward(F.relu(linear1.forward(norm3.forward(t))));
        return t.MoveToOuterDisposeScope();
    }
}

/// <summary><c>nn.TransformerEncoder</c> with a final LayerNorm (keys <c>layers.N.*</c>, <c>norm.*</c>).</summary>
internal sealed class PreLnEncoder : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "layers")] private readonly ModuleList<PreLnEncoderLayer> layers;
    [ComponentName(Name = "norm")] private readonly LayerNorm norm;

    public PreLnEncoder(int numLayers, int dim, int heads, int ffn) : base(nameof(PreLnEncoder))
    {
        layers = new ModuleList<PreLnEncoderLayer>();
        for (int i = 0; i < numLayers; i++) layers.Add(new PreLnEncoderLayer(dim, heads, ffn));
        norm = nn.LayerNorm(dim, 1e-5);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        foreach (var layer in layers) x = layer.forward(x);
        return norm.forward(x).MoveToOuterDisposeScope();
    }
}

/// <summary><c>nn.TransformerDecoder</c> with a final LayerNorm (keys <c>layers.N.*</c>, <c>norm.*</c>).</summary>
internal sealed class PreLnDecoder : nn.Module<Tensor, Tensor, Tensor>
{
    [ComponentName(Name = "layers")] private readonly ModuleList<PreLnDecoderLayer> layers;
    [ComponentName(Name = "norm")] private readonly LayerNorm norm;

    public PreLnDecoder(int numLayers, int dim, int heads, int ffn) : base(nameof(PreLnDecoder))
    {
        layers = new ModuleList<PreLnDecoderLayer>();
        for (int i = 0; i < numLayers; i++) layers.Add(new PreLnDecoderLayer(dim, heads, ffn));
        norm = nn.LayerNorm(dim, 1e-5);
        RegisterComponents();
    }

    public override Tensor forward(Tensor t, Tensor memory)
    {
        using var scope = torch.NewDisposeScope();
        foreach (var layer in layers) t = layer.forward(t, memory);
        return norm.forward(t).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// <c>nn.Transformer(batch_first=True, norm_first=True, dropout=0, activation=relu)</c> without masks: the decoder
/// reads the encoder output after the encoder's final LayerNorm.
/// </summary>
internal sealed class PreLnTransformer : nn.Module<Tensor, Tensor, Tensor>
{
    [ComponentName(Name = "encoder")] private readonly PreLnEncoder encoder;
    [ComponentName(Name = "decoder")] private readonly PreLnDecoder decoder;

    public PreLnTransformer(int encoderLayers, int decoderLayers, int dim, int heads, int ffn) : base(nameof(PreLnTransformer))
    {
        encoder = new PreLnEncoder(encoderLayers, dim, heads, ffn);
        decoder = new PreLnDecoder(decoderLayers, dim, heads, ffn);
        RegisterComponents();
        MapperInit.XavierMatrices(this);
    }

    public override Tensor forward(Tensor src, Tensor tgt)
    {
        using var scope = torch.NewDisposeScope();
        var memory = encoder.forward(src);
        return decoder.forward(tgt, memory).MoveToOuterDisposeScope();
    }
}

internal static class MapperInit
{
    /// <summary>Xavier-uniform on every matrix parameter, as <c>nn.Transformer._reset_parameters</c> does.</summary>
    public static void XavierMatrices(nn.Module module)
    {
        using var noGrad = torch.no_grad();
        foreach (var (_, p) in module.named_parameters())
            if (p.dim() > 1) nn.init.xavier_uniform_(p);
    }
}
