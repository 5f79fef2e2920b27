using Gill.ML.Serialization;
using Microsoft.ML;
using Microsoft.ML.Data;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.MLNet;

/// <summary>
/// One batch of rows handed to a Gill stage's batched function: the stage's input columns as managed arrays (or decoded
/// images / tensors) and the output buffers it fills. Vectors are flattened row-major: row <c>i</c> of a column of size
/// <c>S</c> occupies <c>[i·S, (i+1)·S)</c>.
/// </summary>
public sealed class GillBatch : IDisposable
{
    private readonly IReadOnlyList<GillColumn> _inputs;
    private readonly IReadOnlyList<GillColumn> _outputs;
    private readonly object?[] _in;
    private readonly object?[] _out;
    private readonly bool[] _active;
    private readonly bool[] _written;
    private readonly ImageSource[] _sources;
    private readonly SKBitmap?[]?[] _decoded;
    private readonly long[] _positions;

    internal GillBatch(string stage, IReadOnlyList<GillColumn> inputs, ImageSource[] sources, IReadOnlyList<GillColumn> outputs, bool[] activeOutputs, int capacity, string? imageFolder)
    {
        Stage = stage;
        _inputs = inputs;
        _outputs = outputs;
        _sources = sources;
        _active = activeOutputs;
        Capacity = capacity;
        ImageFolder = imageFolder;
        _positions = new long[capacity];
        _in = new object?[inputs.Count];
        _decoded = new SKBitmap?[]?[inputs.Count];
        for (int i = 0; i < inputs.Count; i++)
        {
            var c = inputs[i];
            _in[i] = c.Kind switch
            {
                GillColumnKind.FloatVector => null, // sized on first row (input vectors may accept any fixed length)
                GillColumnKind.Float => new float[capacity],
                GillColumnKind.Boolean => new bool[capacity],
                GillColumnKind.Key => new uint[capacity],
                GillColumnKind.Text => new string[capacity],
                GillColumnKind.Image => sources[i] == ImageSource.Path ? new string[capacity] : new SKBitmap?[capacity],
                _ => throw new InvalidOperationException($"Unsupported input kind {c.Kind}."),
            };
        }
        _out = new object?[outputs.Count];
        _written = new bool[outputs.Count];
        for (int i = 0; i < outputs.Count; i++)
        {
            if (!_active[i]) continue;
            var c = outputs[i];
            _out[i] = c.Kind switch
            {
                GillColumnKind.FloatVector => new float[(long)capacity * c.Size],
                GillColumnKind.Float => new float[capacity],
                GillColumnKind.Boolean => new bool[capacity],
                GillColumnKind.Text => new string[capacity],
                GillColumnKind.Key => new uint[capacity],
                _ => throw new InvalidOperationException($"Unsupported output kind {c.Kind}."),
            };
        }
    }

    /// <summary>Name of the stage running this batch (for messages).</summary>
    public string Stage { get; }

    /// <summary>Number of rows in this batch.</summary>
    public int Count { get; private set; }

    /// <summary>Maximum number of rows.</summary>
    public int Capacity { get; }

    /// <summary>Folder that relative image paths are resolved against (null: the current directory).</summary>
    public string? ImageFolder { get; }

    /// <summary>Row positions (in the input data view) of the rows of this batch.</summary>
    public ReadOnlySpan<long> Positions => _positions.AsSpan(0, Count);

    private int InputIndex(string column)
    {
        for (int i = 0; i < _inputs.Count; i++) if (_inputs[i].Name == column) return i;
        throw new ArgumentException($"{Stage}: '{column}' is not an input column of this stage (inputs: {string.Join(", ", _inputs.Select(c => c.Name))}).", nameof(column));
    }

    private int OutputIndex(string column)
    {
        for (int i = 0; i < _outputs.Count; i++) if (_outputs[i].Name == column) return i;
        throw new ArgumentException($"{Stage}: '{column}' is not an output column of this stage (outputs: {string.Join(", ", _outputs.Select(c => c.Name))}).", nameof(column));
    }

    /// <summary>The size of one vector value of an input column in this batch.</summary>
    public int InputSize(string column)
    {
        int i = InputIndex(column);
        return _in[i] is float[] a && Count > 0 ? a.Length / Capacity : _inputs[i].Size;
    }

    /// <summary>Flattened float vectors of an input column: <c>Count × size</c> values.</summary>
    public ReadOnlySpan<float> GetFloatVectors(string column)
    {
        int i = InputIndex(column);
        if (_inputs[i].Kind != GillColumnKind.FloatVector) throw new InvalidOperationException($"{Stage}: input '{column}' is not a float vector column.");
        var a = (float[]?)_in[i];
        if (a is null) return ReadOnlySpan<float>.Empty;
        int size = a.Length / Capacity;
        return a.AsSpan(0, Count * size);
    }

    /// <summary>
    /// A float vector input column as a tensor of shape <c>[Count, dims…]</c> (a copy, in the current dispose scope).
    /// </summary>
    public Tensor GetTensor(string column, Device? device = null)
    {
        int i = InputIndex(column);
        var span = GetFloatVectors(column);
        var dims = _inputs[i].Dimensions.Count > 0 ? _inputs[i].Dimensions.Select(d => (long)d).ToArray() : new long[] { InputSize(column) };
        var shape = new long[dims.Length + 1];
        shape[0] = Count;
        dims.CopyTo(shape, 1);
        var t = torch.tensor(span.ToArray(), shape, ScalarType.Float32);
        return device is null || device.type == DeviceType.CPU ? t : t.to(device);
    }

    /// <summary>Float scalars of an input column.</summary>
    public ReadOnlySpan<float> GetFloats(string column) => Typed<float[]>(column, GillColumnKind.Float).AsSpan(0, Count);

    /// <summary>Boolean scalars of an input column.</summary>
    public ReadOnlySpan<bool> GetBooleans(string column) => Typed<bool[]>(column, GillColumnKind.Boolean).AsSpan(0, Count);

    /// <summary>Key values (1-based, 0 = missing) of an input column.</summary>
    public ReadOnlySpan<uint> GetKeys(string column) => Typed<uint[]>(column, GillColumnKind.Key).AsSpan(0, Count);

    /// <summary>Text values of an input column.</summary>
    public IReadOnlyList<string> GetTexts(string column) => new ArraySegment<string>(Typed<string[]>(column, GillColumnKind.Text), 0, Count);

    /// <summary>
    /// The decoded images of an image input column (MLImage values copied, or files decoded with SkiaSharp). The batch
    /// owns them; they are disposed with the batch.
    /// </summary>
    /// <exception cref="FileNotFoundException">An image file does not exist (the message names column, row and file).</exception>
    /// <exception cref="InvalidDataException">An image cannot be decoded (the message names column, row and file).</exception>
    public IReadOnlyList<SKBitmap> GetImages(string column)
    {
        int i = InputIndex(column);
        if (_inputs[i].Kind != GillColumnKind.Image) throw new InvalidOperationException($"{Stage}: input '{column}' is not an image column.");
        if (_sources[i] == ImageSource.MLImage) return new ArraySegment<SKBitmap>(((SKBitmap?[])_in[i]!)!, 0, Count)!;
        var paths = (string[])_in[i]!;
        var decoded = _decoded[i] ??= new SKBitmap?[Capacity];
        for (int r = 0; r < Count; r++)
        {
            if (decoded[r] is not null) continue;
            try
            {
                decoded[r] = GillImageReader.FromFile(paths[r], ImageFolder);
            }
            catch (FileNotFoundException e)
            {
                throw new FileNotFoundException($"{Stage}: column '{column}', row {_positions[r]}: {e.Message}", e.FileName, e);
            }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"{Stage}: column '{column}', row {_positions[r]}: {e.Message}", e);
            }
        }
        return new ArraySegment<SKBitmap>(decoded!, 0, Count)!;
    }

    private T Typed<T>(string column, GillColumnKind kind)
    {
        int i = InputIndex(column);
        if (_inputs[i].Kind != kind) throw new InvalidOperationException($"{Stage}: input '{column}' is {_inputs[i].Kind}, not {kind}.");
        return (T)_in[i]!;
    }

    /// <summary>True when the consumer reads this output column (inactive outputs need not be computed).</summary>
    public bool IsOutputActive(string column) => _active[OutputIndex(column)];

    /// <summary>The buffer of a float vector or float output: <c>Count × size</c> values to fill.</summary>
    public Span<float> GetOutputFloats(string column)
    {
        int i = OutputIndex(column);
        var a = OutputArray<float[]>(i, GillColumnKind.FloatVector, GillColumnKind.Float);
        _written[i] = true;
        return a.AsSpan(0, Count * _outputs[i].Size);
    }

    /// <summary>The buffer of a boolean output.</summary>
    public Span<bool> GetOutputBooleans(string column)
    {
        int i = OutputIndex(column);
        var a = OutputArray<bool[]>(i, GillColumnKind.Boolean, GillColumnKind.Boolean);
        _written[i] = true;
        return a.AsSpan(0, Count);
    }

    /// <summary>The buffer of a key output (1-based values; 0 = missing).</summary>
    public Span<uint> GetOutputKeys(string column)
    {
        int i = OutputIndex(column);
        var a = OutputArray<uint[]>(i, GillColumnKind.Key, GillColumnKind.Key);
        _written[i] = true;
        return a.AsSpan(0, Count);
    }

    /// <summary>The buffer of a text output.</summary>
    public Span<string> GetOutputTexts(string column)
    {
        int i = OutputIndex(column);
        var a = OutputArray<string[]>(i, GillColumnKind.Text, GillColumnKind.Text);
        _written[i] = true;
        return a.AsSpan(0, Count);
    }

    /// <summary>
    /// Copies a tensor of shape <c>[Count, dims…]</c> (any float dtype, any device) into a float vector or float output.
    /// </summary>
    public void SetOutput(string column, Tensor values)
    {
        int i = OutputIndex(column);
        var c = _outputs[i];
        var expected = new long[] { Count }.Concat(c.Kind == GillColumnKind.FloatVector ? c.Dimensions.Select(d => (long)d) : Array.Empty<long>()).ToArray();
        bool sameShape = values.shape.SequenceEqual(expected) || (values.NumberOfElements == (long)Count * c.Size && values.shape.Length > 0 && values.shape[0] == Count);
        if (!sameShape)
            throw new InvalidOperationException($"{Stage}: output '{column}' expects a tensor of shape {SafeTensors.FormatShape(expected)}, got {SafeTensors.FormatShape(values.shape)}.");
        if (!_active[i]) return;
        using var cpu = values.detach().to(ScalarType.Float32).cpu().contiguous();
        System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(cpu.bytes).CopyTo(GetOutputFloats(column));
    }

    private T OutputArray<T>(int i, GillColumnKind k1, GillColumnKind k2) where T : class
    {
        var c = _outputs[i];
        if (c.Kind != k1 && c.Kind != k2) throw new InvalidOperationException($"{Stage}: output '{c.Name}' is {c.Kind}, not {k1}.");
        return _out[i] as T ?? throw new InvalidOperationException($"{Stage}: output '{c.Name}' is not active in this cursor; check IsOutputActive first.");
    }

    // ---- filled by the cursor / mapper ----

    internal void Reset()
    {
        for (int i = 0; i < _decoded.Length; i++)
        {
            var d = _decoded[i];
            if (d is not null) for (int r = 0; r < d.Length; r++) { d[r]?.Dispose(); d[r] = null; }
            if (_in[i] is SKBitmap?[] owned) for (int r = 0; r < owned.Length; r++) { owned[r]?.Dispose(); owned[r] = null; }
        }
        Array.Clear(_written);
        Count = 0;
    }

    internal void AddRow(long position, RowReader reader)
    {
        int r = Count;
        _positions[r] = position;
        for (int i = 0; i < _inputs.Count; i++)
        {
            switch (_inputs[i].Kind)
            {
                case GillColumnKind.FloatVector:
                    {
                        var span = reader.ReadVector(i);
                        var a = (float[]?)_in[i];
                        if (a is null) _in[i] = a = new float[(long)Capacity * span.Length];
                        int size = a.Length / Capacity;
                        if (span.Length != size)
                            throw new InvalidDataException($"{Stage}: column '{_inputs[i].Name}', row {position}: vector has {span.Length} values, expected {size}.");
                        span.CopyTo(a.AsSpan(r * size, size));
                        break;
                    }
                case GillColumnKind.Float: ((float[])_in[i]!)[r] = reader.ReadFloat(i); break;
                case GillColumnKind.Boolean: ((bool[])_in[i]!)[r] = reader.ReadBoolean(i); break;
                case GillColumnKind.Key: ((uint[])_in[i]!)[r] = reader.ReadKey(i); break;
                case GillColumnKind.Text: ((string[])_in[i]!)[r] = reader.ReadText(i); break;
                case GillColumnKind.Image:
                    if (_sources[i] == ImageSource.Path) ((string[])_in[i]!)[r] = reader.ReadText(i);
                    else
                    {
                        var img = reader.ReadImage(i);
                        if (img is null) throw new InvalidDataException($"{Stage}: column '{_inputs[i].Name}', row {position}: the image is missing (null MLImage).");
                        ((SKBitmap?[])_in[i]!)[r] = GillImageReader.FromMLImage(img);
                    }
                    break;
            }
        }
        Count = r + 1;
    }

    internal void CheckOutputsWritten()
    {
        for (int i = 0; i < _outputs.Count; i++)
            if (_active[i] && !_written[i])
                throw new InvalidOperationException($"{Stage}: the batch function did not write output column '{_outputs[i].Name}'.");
    }

    internal void CopyVector(int output, int row, ref VBuffer<float> dst)
    {
        var c = _outputs[output];
        var a = (float[])_out[output]!;
        int size = c.Size;
        var editor = VBufferEditor.Create(ref dst, size);
        a.AsSpan(row * size, size).CopyTo(editor.Values);
        dst = editor.Commit();
    }

    internal float GetFloat(int output, int row) => ((float[])_out[output]!)[row];
    internal bool GetBoolean(int output, int row) => ((bool[])_out[output]!)[row];
    internal uint GetKey(int output, int row) => ((uint[])_out[output]!)[row];
    internal string GetText(int output, int row) => ((string[])_out[output]!)[row] ?? "";

    /// <inheritdoc />
    public void Dispose() => Reset();

    /// <summary>Reads the stage's input columns of the current row of a <see cref="DataViewRow"/>.</summary>
    internal sealed class RowReader
    {
        private readonly Delegate?[] _getters;

        public RowReader(DataViewRow row, IReadOnlyList<GillColumn> inputs, (int Index, ImageSource Source)[] columns)
        {
            _getters = new Delegate?[inputs.Count];
            for (int i = 0; i < inputs.Count; i++)
            {
                var col = row.Schema[columns[i].Index];
                _getters[i] = inputs[i].Kind switch
                {
                    GillColumnKind.FloatVector => row.GetGetter<VBuffer<float>>(col),
                    GillColumnKind.Float => row.GetGetter<float>(col),
                    GillColumnKind.Boolean => row.GetGetter<bool>(col),
                    GillColumnKind.Key => row.GetGetter<uint>(col),
                    GillColumnKind.Text => row.GetGetter<ReadOnlyMemory<char>>(col),
                    GillColumnKind.Image when columns[i].Source == ImageSource.Path => row.GetGetter<ReadOnlyMemory<char>>(col),
                    GillColumnKind.Image => row.GetGetter<MLImage>(col),
                    _ => null,
                };
            }
        }

        private VBuffer<float> _vec;
        private float[] _dense = Array.Empty<float>();

        public ReadOnlySpan<float> ReadVector(int i)
        {
            ((ValueGetter<VBuffer<float>>)_getters[i]!)(ref _vec);
            if (_vec.IsDense) return _vec.GetValues();
            if (_dense.Length != _vec.Length) _dense = new float[_vec.Length];
            _vec.CopyTo(_dense);
            return _dense;
        }

        public float ReadFloat(int i) { float v = 0; ((ValueGetter<float>)_getters[i]!)(ref v); return v; }
        public bool ReadBoolean(int i) { bool v = false; ((ValueGetter<bool>)_getters[i]!)(ref v); return v; }
        public uint ReadKey(int i) { uint v = 0; ((ValueGetter<uint>)_getters[i]!)(ref v); return v; }
        public string ReadText(int i) { ReadOnlyMemory<char> v = default; ((ValueGetter<ReadOnlyMemory<char>>)_getters[i]!)(ref v); return v.ToString(); }

        /// <summary>Reads an image into a fresh variable, so the upstream getter never disposes an earlier row's image.</summary>
        public MLImage? ReadImage(int i) { MLImage? v = null; ((ValueGetter<MLImage>)_getters[i]!)(ref v!); return v; }
    }
}
